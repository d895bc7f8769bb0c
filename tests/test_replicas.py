"""Several replicas on one PostgreSQL and one Redis: limits hold globally, charges add up, crashes heal."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess
from tests.billing import K25, Operator, chat, config, generation, sdk, start, tiers, wait_for_usage
from tests.burst import Reply, burst
from tests.fakes.upstream import Answer, FakeUpstream
from tests.services import (
    clear_redis,
    drop_postgres_database,
    fresh_postgres_database,
    redis_url,
)
from tests.upstreams import KEY, KEY_ENV

HI = [{"role": "user", "content": "Hi"}]
Replica = Callable[[str], GatewayProcess]


@pytest.fixture()
def moon(fakes: dict[str, FakeUpstream]) -> FakeUpstream:
    return fakes["moon"]


@pytest.fixture()
def shared() -> Iterator[tuple[str, str, str]]:
    """A fresh PostgreSQL database and a Redis namespace of this test's own."""
    redis_at = redis_url()
    database = fresh_postgres_database()
    prefix = f"kgtest:{secrets.token_hex(4)}:"
    yield database, redis_at, prefix
    clear_redis(prefix)
    drop_postgres_database(database)


def _replicas(
    tmp_path: Path, moon: FakeUpstream, shared: tuple[str, str, str], tier_table: str, flush: float
) -> tuple[Replica, list[GatewayProcess]]:
    database, redis_at, prefix = shared
    text = config(
        moon,
        tier_table,
        flush_seconds=flush,
        extra=f'database_url = "{database}"\nredis_url = "{redis_at}"\nredis_prefix = "{prefix}"\n',
    )
    running: list[GatewayProcess] = []

    def replica(name: str) -> GatewayProcess:
        gw = start(tmp_path / name, text)
        running.append(gw)
        return gw

    return replica, running


@pytest.fixture()
def cluster(
    tmp_path: Path, moon: FakeUpstream, shared: tuple[str, str, str]
) -> Iterator[Callable[[str, float], Replica]]:
    started: list[list[GatewayProcess]] = []

    def make(tier_table: str, flush: float = 0.1) -> Replica:
        replica, running = _replicas(tmp_path, moon, shared, tier_table, flush)
        started.append(running)
        return replica

    yield make  # type: ignore[misc]
    for running in started:
        for gw in running:
            if gw.proc.poll() is None:
                gw.stop()


def _charges(database: str, account: str) -> list[Decimal]:
    async def query() -> list[Decimal]:
        connection = await asyncpg.connect(database)
        try:
            rows = await connection.fetch(
                "SELECT amount FROM ledger_entries WHERE kind = 'charge' AND account_id = $1", account
            )
            return [row["amount"] for row in rows]
        finally:
            await connection.close()

    return asyncio.run(query())


def _live(prefix: str, account: str) -> tuple[int, int]:
    """The live balance and the amount held, in nano-dollars, as Redis has them."""
    client = redis.Redis.from_url(redis_url())
    bal, held = client.hmget(f"{prefix}acct:{account}", ["bal", "held"])
    client.close()
    return int(bal or 0), int(held or 0)


def _burst(targets: list[tuple[GatewayProcess, str]], count: int) -> list[Reply]:
    return burst(
        [(gw.api + "/chat/completions", key) for gw, key in targets], count, {"model": K25, "messages": HI}
    )


def test_500_requests_on_two_replicas_keep_the_global_rpm_and_exact_charges(
    cluster: Callable[[str, float], Replica], shared: tuple[str, str, str]
) -> None:
    database, _, prefix = shared
    replica = cluster(tiers((0, 0, 1000, 300)), 0.1)
    a = replica("a")
    ops = Operator(a)
    b = replica("b")  # started after the first key exists, so it never runs without auth
    key = ops.key_for("acct_many")
    ops.recharge("acct_many", "50")  # holds for 300 requests in flight at once stay covered

    responses = _burst([(a, key), (b, key)], 500)
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 300 and statuses.count(429) == 200, sorted(set(statuses))
    served_by = {r.port for r in responses if r.status_code == 200}
    assert served_by == {a.port, b.port}  # both replicas took part

    reported = sum(Decimal(str(r.json()["usage"]["cost"])) for r in responses if r.status_code == 200)
    wait_for_usage(a, key, float(reported))
    charges = _charges(database, "acct_many")
    assert len(charges) == 300 and sum(charges) == reported  # to the nano-dollar
    bal, held = _live(prefix, "acct_many")
    assert held == 0 and bal == 50 * 10**9 - int(reported * 10**9)
    balance = httpx.get(b.api + "/users/me/balance", headers={"Authorization": f"Bearer {key}"}).json()
    assert Decimal(str(balance["data"]["available_balance"])) == Decimal(50) - reported


def test_concurrency_limit_is_global(cluster: Callable[[str, float], Replica], moon: FakeUpstream) -> None:
    replica = cluster(tiers((0, 0, 4, 1000)), 0.1)
    a = replica("a")
    ops = Operator(a)
    b = replica("b")
    key = ops.key_for("acct_conc")
    ops.recharge("acct_conc", "1")
    redis.Redis.from_url(redis_url()).script_flush()  # as after a Redis restart: scripts must reload
    # A free model holds nothing: its zero hold must settle cleanly too, and give its slot back.
    free = chat(b, key, model=LOCAL_MODEL, max_tokens=2)
    assert free.status_code == 200 and free.json()["usage"]["cost"] == 0
    assert not [r for r in b.log_records() if r.get("level") == "error"]
    moon.default = Answer(first_delay=2.0)  # every admitted request holds its slot for two seconds
    responses = _burst([(a, key), (b, key)], 12)
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 4 and statuses.count(429) == 8, statuses
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.headers["x-ratelimit-limit"] == "4" and "max concurrency: 4" in limited.text


def test_kill_9_one_replica_mid_stream(
    cluster: Callable[[str, float], Replica], shared: tuple[str, str, str], moon: FakeUpstream
) -> None:
    database, _, prefix = shared
    replica = cluster(tiers((0, 0, 50, 1000)), 3600)  # nothing reaches the database until stop or recovery
    a = replica("a")
    ops = Operator(a)
    b = replica("b")
    key = ops.key_for("acct_crash")
    ops.recharge("acct_crash", "1")
    costs = [Decimal(str(chat(gw, key).json()["usage"]["cost"])) for gw in (a, a, b)]

    moon.default = Answer(content="a b c d e f g h i j k l", chunk_delay=0.5)
    stream = sdk(a, key).chat.completions.create(model=K25, messages=HI, stream=True)  # type: ignore[arg-type]
    open_id = next(iter(stream)).id
    assert _live(prefix, "acct_crash")[1] > 0  # the stream's hold is in Redis
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait()
    stream.close()
    moon.default = Answer()

    costs.append(Decimal(str(chat(b, key).json()["usage"]["cost"])))  # the other replica carries on
    restarted = replica("a")  # same data directory: it finds the dead process's journal
    record = generation(restarted, key, open_id)
    assert record["status"] == "interrupted" and record["total_cost"] == 0
    b.stop()  # writes its own waiting charges
    restarted.stop()

    charges = _charges(database, "acct_crash")
    assert len(charges) == 4 and sum(charges) == sum(costs)  # none lost, none twice
    bal, held = _live(prefix, "acct_crash")
    assert held == 0  # the killed stream's hold was released
    assert bal == 10**9 - int(sum(costs) * 10**9)


def test_a_key_disabled_on_one_replica_is_refused_by_the_other_within_a_second(
    cluster: Callable[[str, float], Replica],
) -> None:
    replica = cluster(tiers((0, 0, 50, 1000)), 0.1)
    a = replica("a")
    ops = Operator(a)
    b = replica("b")
    key = ops.key_for("acct_revoke")
    owner = ops.key_for("acct_revoke", kind="management")
    ops.recharge("acct_revoke", "1")
    assert chat(b, key).status_code == 200  # b has the key cached as valid (for up to 5 s)
    deleted = httpx.delete(
        a.base_url + f"/api/v1/keys/{hashlib.sha256(key.encode()).hexdigest()}",
        headers={"Authorization": f"Bearer {owner}"},
    )
    assert deleted.status_code == 200, deleted.text
    disabled_at = time.monotonic()
    while chat(b, key).status_code == 200:
        assert time.monotonic() - disabled_at < 1.0, "replica b still accepts the disabled key"
        time.sleep(0.05)
    assert chat(a, key).status_code == 401


def test_a_recharge_on_one_replica_lifts_the_tier_on_the_other_at_once(
    cluster: Callable[[str, float], Replica],
) -> None:
    replica = cluster(tiers((0, 0, 50, 1), (1, 5, 50, 1000)), 0.1)
    a = replica("a")
    ops = Operator(a)
    b = replica("b")
    key = ops.key_for("acct_lift")
    ops.recharge("acct_lift", "1")
    assert chat(b, key).status_code == 200
    assert chat(b, key).status_code == 429  # tier 0 on b, cached
    ops.recharge("acct_lift", "10")  # on a
    time.sleep(0.5)
    assert chat(b, key).status_code == 200


def test_a_hold_grows_in_redis_when_intake_finds_a_larger_request(
    cluster: Callable[[str, float], Replica], shared: tuple[str, str, str], moon: FakeUpstream
) -> None:
    _, _, prefix = shared
    replica = cluster(tiers((0, 0, 50, 1000)), 0.1)
    a = replica("a")
    ops = Operator(a)
    key = ops.key_for("acct_topup")
    ops.recharge("acct_topup", "0.004")
    text = base64.b64encode(("the quarterly figures rose again. " * 1200).encode()).decode()
    part = {"type": "file", "file": {"filename": "n.txt", "file_data": f"data:text/plain;base64,{text}"}}
    refused = chat(a, key, max_tokens=10, messages=[{"role": "user", "content": [part]}])
    assert refused.status_code == 402, refused.text
    assert moon.requests == []
    assert _live(prefix, "acct_topup") == (4_000_000, 0)  # nothing held, nothing charged

    moon.default = Answer(first_delay=1.0)
    # 5,400 bytes: its hold (the byte bound at $0.60 per million, $0.0032) fits the $0.004.
    small = base64.b64encode(("the figures rose. " * 300).encode()).decode()
    part = {"type": "file", "file": {"filename": "n.txt", "file_data": f"data:text/plain;base64,{small}"}}

    async def during() -> tuple[httpx.Response, int]:
        async with httpx.AsyncClient(timeout=30) as client:
            sent = asyncio.ensure_future(
                client.post(
                    a.api + "/chat/completions",
                    json={"model": K25, "messages": [{"role": "user", "content": [part]}], "max_tokens": 10},
                    headers={"Authorization": f"Bearer {key}"},
                )
            )
            await asyncio.sleep(0.6)
            held = _live(prefix, "acct_topup")[1]
            return await sent, held

    served, held = asyncio.run(during())
    assert served.status_code == 200, served.text
    # The hold covers the document's text (at most 5,400 tokens at $0.60 per million), not just the ~10
    # tokens admission saw before reading it.
    assert held > 1_000_000, held
    cost = int(Decimal(str(served.json()["usage"]["cost"])) * 10**9)
    time.sleep(0.5)
    assert _live(prefix, "acct_topup") == (4_000_000 - cost, 0)


def test_two_workers_keep_the_rpm_and_exact_charges(
    tmp_path: Path, moon: FakeUpstream, shared: tuple[str, str, str]
) -> None:
    """`serve --workers 2` on one machine, with Redis: the limits and holds of both workers are one."""
    database, redis_at, prefix = shared
    text = config(
        moon,
        tiers((0, 0, 1000, 120)),
        flush_seconds=0.1,
        extra=f'database_url = "{database}"\nredis_url = "{redis_at}"\nredis_prefix = "{prefix}"\n',
    )
    setup = start(tmp_path / "gw", text)  # keys first, so no worker ever serves without them
    ops = Operator(setup)
    key = ops.key_for("acct_workers")
    ops.recharge("acct_workers", "10")
    setup.stop()
    gw = GatewayProcess(tmp_path / "gw", text, env={KEY_ENV: KEY}, args=["--workers", "2"])
    try:
        gw.wait_for_workers(2)
        moon.default = Answer(first_delay=0.2)  # requests overlap, so both workers take some
        responses = _burst([(gw, key)], 200)
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) == 120 and statuses.count(429) == 80, sorted(set(statuses))
        assert len(list((tmp_path / "gw" / "data" / "metrics").glob("*.json"))) == 2  # both workers served
        reported = sum(Decimal(str(r.json()["usage"]["cost"])) for r in responses if r.status_code == 200)
        wait_for_usage(gw, key, float(reported))
        charges = _charges(database, "acct_workers")
        assert len(charges) == 120 and sum(charges) == reported  # to the nano-dollar
        bal, held = _live(prefix, "acct_workers")
        assert held == 0 and bal == 10 * 10**9 - int(reported * 10**9)
    finally:
        gw.stop()
