"""Each Redis script (kimi_gateway/accounts/lua/*.lua) on its own, against a real Redis: what it answers
and what it leaves behind."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from kimi_gateway.accounts.holds import HoldRequest
from kimi_gateway.accounts.holds_redis import hold_args, settle_args
from kimi_gateway.accounts.scripts import script
from kimi_gateway.limits import Window
from kimi_gateway.limits.redis import limit_args, release_args
from tests.services import clear_redis, redis_url


@pytest.fixture()
def r() -> Iterator[tuple[redis.Redis, str]]:
    client = redis.Redis.from_url(redis_url())
    prefix = f"kglua:{secrets.token_hex(4)}:"
    yield client, prefix
    client.close()
    clear_redis(prefix)


def _run(client: redis.Redis, name: str, *args: bytes | str) -> Any:
    return client.eval(script(name), 0, *args)


def _pair(prefix: str, slot: str, amount: int, rpm: int = 10, limit: int | None = None) -> bytes:
    lim = limit_args(prefix, slot, "a:acct", 5, [Window("a:acct", rpm)], 60_000)
    hold = hold_args(prefix, HoldRequest(slot, "acct", "k1", amount, limit), 900_000)
    return b"[" + lim + b"," + hold + b"]"


def _admit_item(prefix: str, slot: str, amount: int, rpm: int = 10, limit: int | None = None) -> bytes:
    return b"[" + _pair(prefix, slot, amount, rpm, limit) + b"]"


def _finish_item(prefix: str, slot: str, cost: int) -> bytes:
    return (
        b"[["
        + settle_args(prefix, slot, "acct", "k1", cost)
        + b","
        + release_args(prefix, slot, "a:acct")
        + b"]]"
    )


def _acct(client: redis.Redis, prefix: str) -> tuple[int, int]:
    bal, held = client.hmget(f"{prefix}acct:acct", ["bal", "held"])
    return int(bal or 0), int(held or 0)


def test_admit_loads_refuses_and_holds(r: tuple[redis.Redis, str]) -> None:
    client, prefix = r
    assert _run(client, "admit.lua", _admit_item(prefix, "g1", 100)) == [[-1]]  # balance not loaded yet
    assert client.zcard(f"{prefix}rpm:a:acct") == 0  # ...and nothing taken
    client.hset(f"{prefix}acct:acct", "bal", 1000)
    admitted = _run(client, "admit.lua", _admit_item(prefix, "g1", 600))[0]
    assert admitted[0] == 1 and admitted[3] == 9  # 9 requests left this minute
    assert _acct(client, prefix) == (1000, 600)
    short = _run(client, "admit.lua", _admit_item(prefix, "g2", 600))[0]
    assert short[0] == 2 and int(short[1]) == 400 and short[2] == b"account"
    assert client.zcard(f"{prefix}conc:a:acct") == 1  # the refused one took no slot
    # A batch: items decided in order on one clock. With 2 a minute, g1 and g3 fill the window; g4 is over.
    batch = b"[" + _pair(prefix, "g3", 10, rpm=2) + b"," + _pair(prefix, "g4", 10, rpm=2) + b"]"
    first, second = _run(client, "admit.lua", batch)
    assert first[0] == 1 and second[:3] == [0, b"rpm", 2]
    # A key with its own credit limit needs its usage loaded, then is held against it.
    assert _run(client, "admit.lua", _admit_item(prefix, "g5", 10, limit=50, rpm=100)) == [[-2]]
    client.hset(f"{prefix}key:k1", "used", 45)
    short = _run(client, "admit.lua", _admit_item(prefix, "g5", 10, limit=50, rpm=100))[0]
    assert short[0] == 2 and int(short[1]) == 5 and short[2] == b"key"


def test_finish_settles_once_and_frees_the_slot(r: tuple[redis.Redis, str]) -> None:
    client, prefix = r
    client.hset(f"{prefix}acct:acct", "bal", 1000)
    client.hset(f"{prefix}key:k1", "used", 0)
    _run(client, "admit.lua", _admit_item(prefix, "g1", 600, limit=10_000))
    item = _finish_item(prefix, "g1", 250)
    assert _run(client, "finish.lua", item) == [1]
    assert _acct(client, prefix) == (750, 0)
    assert int(client.hget(f"{prefix}key:k1", "used") or 0) == 250
    assert client.zcard(f"{prefix}conc:a:acct") == 0 and not client.exists(f"{prefix}hold:g1")
    assert _run(client, "finish.lua", item) == [1]  # a replayed journal
    assert _acct(client, prefix) == (750, 0)


def test_settle_agrees_with_finish(r: tuple[redis.Redis, str]) -> None:
    """settle.lua (recovery) and finish.lua (the hot path) close a hold the same way."""
    client, prefix = r
    client.hset(f"{prefix}acct:acct", "bal", 1000)
    _run(client, "admit.lua", _admit_item(prefix, "g1", 300))
    _run(client, "admit.lua", _admit_item(prefix, "g2", 300))
    _run(client, "settle.lua", settle_args(prefix, "g1", "acct", "k1", 100))
    after_settle = _acct(client, prefix)
    _run(client, "finish.lua", _finish_item(prefix, "g2", 100))
    assert after_settle == (900, 300) and _acct(client, prefix) == (800, 0)
    assert client.exists(f"{prefix}settled:g1") and client.exists(f"{prefix}settled:g2")
    _run(client, "settle.lua", settle_args(prefix, "g1", "acct", "k1", 100))  # twice: nothing changes
    assert _acct(client, prefix) == (800, 0)


def test_credit_moves_only_a_loaded_balance(r: tuple[redis.Redis, str]) -> None:
    client, prefix = r
    _run(client, "credit.lua", prefix, "acct", "500")
    assert not client.exists(f"{prefix}acct:acct")  # not loaded: the ledger has it, loaded on first use
    client.hset(f"{prefix}acct:acct", "bal", 1000)
    _run(client, "credit.lua", prefix, "acct", "500")
    assert _acct(client, prefix) == (1500, 0)


def test_top_up_grows_a_hold_in_place_or_says_why_not(r: tuple[redis.Redis, str]) -> None:
    client, prefix = r
    client.hset(f"{prefix}acct:acct", "bal", 1000)
    _run(client, "admit.lua", _admit_item(prefix, "g1", 300))
    grow = hold_args(prefix, HoldRequest("g1", "acct", "k1", 500, None), 900_000)
    assert _run(client, "top_up.lua", grow) == [1]
    assert _acct(client, prefix) == (1000, 800) and int(client.hget(f"{prefix}hold:g1", "n") or 0) == 800
    too_much = hold_args(prefix, HoldRequest("g1", "acct", "k1", 300, None), 900_000)
    short = _run(client, "top_up.lua", too_much)
    assert short[0] == 2 and int(short[1]) == 200 and _acct(client, prefix) == (1000, 800)
    # Settling releases the whole grown hold.
    _run(client, "settle.lua", settle_args(prefix, "g1", "acct", "k1", 0))
    assert _acct(client, prefix) == (1000, 0)
    assert _run(client, "top_up.lua", grow) == [1] and _acct(client, prefix) == (1000, 0)  # gone: no-op


def test_scripts_are_whole_files_read_once() -> None:
    for name in ("admit.lua", "finish.lua", "settle.lua", "credit.lua", "top_up.lua"):
        text = script(name)
        assert text.startswith("--") and "return" in text
    assert script("admit.lua") is script("admit.lua")
