"""What one tenant sends cannot stop the gateway's work for the others: bad rows, revoked keys, recharges,
the breaker. Real server processes, on PostgreSQL where SQLite would forgive the fault."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess
from tests import images
from tests.billing import K25, Operator, chat, config, credits, generation, start, tiers, wait_for_usage
from tests.fakes.upstream import FakeUpstream
from tests.services import drop_postgres_database, fresh_postgres_database


@pytest.fixture()
def moon(fakes: dict[str, FakeUpstream]) -> FakeUpstream:
    return fakes["moon"]


@pytest.fixture()
def postgres() -> Iterator[str]:
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


def _pg(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(url)
        try:
            return list(await connection.fetch(query, *args))
        finally:
            await connection.close()

    return asyncio.run(run())


def test_long_app_headers_do_not_stop_billing_on_postgres(
    tmp_path: Path, moon: FakeUpstream, postgres: str
) -> None:
    gw = start(tmp_path / "gw", config(moon, extra=f'database_url = "{postgres}"\n'))
    ops = Operator(gw)
    key = ops.key_for("acct_long")
    other = ops.key_for("acct_other")
    ops.recharge("acct_long", "1")
    ops.recharge("acct_other", "1")
    long_headers = {
        "Authorization": f"Bearer {key}",
        "X-Title": "t" * 300,
        "HTTP-Referer": "https://a/" + "r" * 900,
    }
    first = httpx.post(
        gw.api + "/chat/completions",
        json={"model": K25, "messages": [{"role": "user", "content": "Hi"}]},
        headers=long_headers,
        timeout=30,
    )
    assert first.status_code == 200, first.text
    second = chat(gw, other)  # another tenant's request, in the same or the next batch
    assert second.status_code == 200

    stored = generation(gw, key, first.json()["id"])
    assert stored["app_title"] == "t" * 200 and len(stored["http_referer"]) == 500
    assert generation(gw, other, second.json()["id"])["total_cost"] > 0
    assert wait_for_usage(gw, other, second.json()["usage"]["cost"])["total_usage"] == pytest.approx(
        second.json()["usage"]["cost"]
    )
    assert credits(gw, key)["total_usage"] == pytest.approx(first.json()["usage"]["cost"])
    assert not [r for r in gw.log_records() if r.get("level") == "error"]
    gw.stop()


def _journal(folder: Path, records: list[dict[str, object]]) -> None:
    folder.mkdir(parents=True)
    (folder / "lock").touch()
    (folder / "00000001.jsonl").write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records))


def _old_close(gid: str, account: str, key_hash: str, cost: int, title: str | None) -> dict[str, object]:
    """A close record as the release before journal versions wrote it: no `v`, and no reasoning_tokens."""
    generation = {
        "id": gid,
        "account_id": account,
        "key_hash": key_hash,
        "model": K25,
        "provider": "Moonshot AI",
        "status": "success",
        "finish_reason": "stop",
        "streamed": False,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cached_tokens": 0,
        "cost": cost,
        "latency_ms": 12.5,
        "ttft_ms": None,
        "app_referer": None,
        "app_title": title,
        "created_at": time.time(),
    }
    charge = {
        "id": "charge_" + gid,
        "account_id": account,
        "kind": "charge",
        "amount": cost,
        "key_hash": key_hash,
        "reference": gid,
    }
    return {"op": "close", "id": gid, "generation": generation, "charge": charge}


def test_old_journal_with_bad_rows_replays_and_sets_aside_what_cannot_be_written(
    tmp_path: Path, moon: FakeUpstream, postgres: str
) -> None:
    workdir = tmp_path / "gw"
    text = config(moon, tiers((0, 0, 50, 1000)), extra=f'database_url = "{postgres}"\n')
    gw = start(workdir, text)
    ops = Operator(gw)
    key = ops.key_for("acct_j")
    ops.recharge("acct_j", "1")
    key_hash = hashlib.sha256(key.encode()).hexdigest()
    gw.stop()

    _journal(
        workdir / "data" / "journal" / "0123456789abcdef",
        [
            _old_close("gen-long", "acct_j", key_hash, 7000, "x" * 300),  # too long for PostgreSQL
            _old_close("gen-fine", "acct_j", key_hash, 3000, "fine"),
            _old_close("gen-orphan", "acct_gone", key_hash, 5000, None),  # no such account: refused
        ],
    )
    gw = start(workdir, text)
    try:
        ops = Operator(gw, ops.key)
        assert generation(gw, key, "gen-long")["app_title"] == "x" * 200
        assert generation(gw, key, "gen-fine")["total_cost"] == pytest.approx(3e-6)
        assert credits(gw, key)["total_usage"] == pytest.approx(10e-6)  # both charges, nothing lost
        charges = _pg(postgres, "SELECT id, amount FROM ledger_entries WHERE kind = 'charge'")
        assert sorted(r["id"] for r in charges) == ["charge_gen-fine", "charge_gen-long"]
        assert sum(r["amount"] for r in charges) == Decimal("0.00001")
        aside = list((workdir / "data" / "dead-letter").glob("*.jsonl"))
        rows = [json.loads(line) for path in aside for line in path.read_text().splitlines()]
        assert [r["row"]["id"] for r in rows] == ["charge_gen-orphan"]
        errors = [r for r in gw.log_records() if r.get("level") == "error"]
        assert len(errors) == 1 and "set aside" in errors[0]["msg"]
        # Later requests are written as usual: nothing is stuck behind the refused row.
        later = chat(gw, key)
        assert generation(gw, key, later.json()["id"])["total_cost"] > 0
    finally:
        gw.stop()


def _cli(gw: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kimi_gateway", *args, "--config", str(gw.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_key_disabled_elsewhere_stops_within_the_cache_bound(tmp_path: Path, moon: FakeUpstream) -> None:
    gw = start(tmp_path / "gw", config(moon, cache_seconds=2))
    try:
        ops = Operator(gw)
        key = ops.key_for("acct_rev")
        ops.recharge("acct_rev", "1")
        assert chat(gw, key).status_code == 200  # the key is now cached as valid
        disabled = _cli(gw, "keys", "disable", hashlib.sha256(key.encode()).hexdigest())
        assert disabled.returncode == 0, disabled.stderr
        time.sleep(2.2)  # the cache's age bound, and nothing else: no request has refreshed it meanwhile
        assert [chat(gw, key).status_code for _ in range(3)] == [401, 401, 401]

        # Disabled through this gateway's API: refused at once, by the very next request.
        other = ops.key_for("acct_rev")
        owner = ops.key_for("acct_rev", kind="management")  # the account's own management key
        assert chat(gw, other).status_code == 200
        patched = httpx.patch(
            gw.base_url + f"/api/v1/keys/{hashlib.sha256(other.encode()).hexdigest()}",
            json={"disabled": True},
            headers={"Authorization": f"Bearer {owner}"},
        )
        assert patched.status_code == 200, patched.text
        assert chat(gw, other).status_code == 401
    finally:
        gw.stop()


def test_a_recharge_made_elsewhere_lifts_the_tier_for_the_first_request_after_the_bound(
    tmp_path: Path, moon: FakeUpstream
) -> None:
    gw = start(tmp_path / "gw", config(moon, tiers((0, 0, 50, 1), (1, 5, 50, 1000)), cache_seconds=2))
    try:
        ops = Operator(gw)
        key = ops.key_for("acct_tier")
        ops.recharge("acct_tier", "1")  # through the API: tier 0 still (1 < 5)
        assert chat(gw, key).status_code == 200
        assert chat(gw, key).status_code == 429  # tier 0: one request a minute
        added = _cli(gw, "credits", "add", "acct_tier", "10")
        assert added.returncode == 0, added.stderr
        time.sleep(2.2)
        assert chat(gw, key).status_code == 200  # the first request after the bound sees tier 1
    finally:
        gw.stop()


@pytest.fixture()
def image_host() -> Iterator[images.ImageHost]:
    server = images.ImageHost()
    yield server
    server.shutdown()


def test_media_is_read_only_for_admitted_requests(
    tmp_path: Path, moon: FakeUpstream, image_host: images.ImageHost
) -> None:
    media = '[media]\nallow_hosts = ["127.0.0.1"]\n'
    gw = start(tmp_path / "gw", config(moon, tiers((0, 0, 50, 3)), extra=media))
    try:
        ops = Operator(gw)
        key = ops.key_for("acct_media")
        ops.recharge("acct_media", "1")
        url = f"http://127.0.0.1:{image_host.port}/receipt.png"
        content = [{"type": "text", "text": "What is the total?"}, images.image_part(url)]
        statuses = [
            chat(
                gw, key, model=LOCAL_MODEL, max_tokens=4, messages=[{"role": "user", "content": content}]
            ).status_code
            for _ in range(6)
        ]
        assert statuses == [200, 200, 200, 429, 429, 429]
        assert len(image_host.hits) == 3  # the refused requests fetched (and OCR'd) nothing

        # A catalog model no provider serves is refused before any media work too.
        unserved = chat(
            gw, key, model="kimi-vl-a3b-instruct", messages=[{"role": "user", "content": content}]
        )
        assert unserved.status_code in (404, 503), unserved.text
        assert len(image_host.hits) == 3
    finally:
        gw.stop()


def test_a_prefixed_mount_settles_every_request(tmp_path: Path, moon: FakeUpstream) -> None:
    """Behind a proxy that serves the gateway under /kimi and strips the prefix (uvicorn's root_path): the
    chat route is still served, accounted and settled (its hold given back, its charge written)."""
    gw = start(
        tmp_path / "gw",
        config(moon, tiers((0, 0, 1, 1000)), extra='[server]\nroot_path = "/kimi"\n'),
    )
    try:
        ops = Operator(gw)
        key = ops.key_for("acct_prefix")
        ops.recharge("acct_prefix", "1")
        costs = []
        for _ in range(3):  # concurrency 1: a hold or slot left unsettled would refuse the next one
            response = httpx.post(
                gw.base_url + "/v1/chat/completions",  # as the proxy forwards it
                json={"model": K25, "messages": [{"role": "user", "content": "Hi"}]},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            costs.append(response.json()["usage"]["cost"])
        assert wait_for_usage(gw, key, sum(costs))["total_usage"] == pytest.approx(sum(costs))
    finally:
        gw.stop()


def _file_part(text: str) -> dict[str, Any]:
    data = base64.b64encode(text.encode()).decode()
    return {"type": "file", "file": {"filename": "notes.txt", "file_data": f"data:text/plain;base64,{data}"}}


def test_a_request_that_grows_at_intake_tops_up_its_hold_or_gets_402(
    tmp_path: Path, moon: FakeUpstream
) -> None:
    """Admission holds credit before the document is read; once its text is known, the hold grows to the
    new worst case, or the request is refused with 402 if the account cannot cover it."""
    gw = start(tmp_path / "gw", config(moon))
    try:
        ops = Operator(gw)
        key = ops.key_for("acct_grow")
        ops.recharge("acct_grow", "0.004")  # $0.60 per million in: about 6,600 tokens' worth
        big = "the quarterly figures rose again. " * 1200  # ~40,000 characters: ~10,000 tokens
        content = [{"type": "text", "text": "Summarize."}, _file_part(big)]
        refused = chat(gw, key, max_tokens=10, messages=[{"role": "user", "content": content}])
        assert refused.status_code == 402, refused.text
        assert refused.json()["error"]["code"] == "insufficient_credits"
        assert moon.requests == []  # refused before any provider was tried

        small = [{"type": "text", "text": "Summarize."}, _file_part("the figures rose. " * 50)]
        served = chat(gw, key, max_tokens=10, messages=[{"role": "user", "content": small}])
        assert served.status_code == 200, served.text
        # The refused request's hold was released, the served one's settled: only its cost is gone.
        cost = served.json()["usage"]["cost"]
        assert wait_for_usage(gw, key, cost)["total_usage"] == pytest.approx(cost)
        balance = httpx.get(gw.api + "/users/me/balance", headers={"Authorization": f"Bearer {key}"})
        assert balance.json()["data"]["available_balance"] == pytest.approx(0.004 - cost)
    finally:
        gw.stop()


HI_LOCAL = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def _keyless(gw: GatewayProcess) -> int:
    return httpx.post(gw.api + "/chat/completions", json=HI_LOCAL, timeout=60).status_code


def test_bootstrap_ends_when_the_first_key_is_made(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    gw = GatewayProcess(tmp_path / "a", "[accounts]\ncache_seconds = 1\n")
    try:
        assert _keyless(gw) == 200  # no keys yet: the loopback bootstrap
        made = _cli(gw, "keys", "create", "--name", "first")  # another process makes the first key
        assert made.returncode == 0, made.stderr
        # Keyless requests keep coming: none passes once the cache's bound (1 s) is over.
        statuses = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            statuses.append(_keyless(gw))
        assert 401 in statuses and 200 not in statuses[statuses.index(401) :], statuses
        assert _keyless(gw) == 401
    finally:
        gw.stop()

    (tmp_path / "b").mkdir()
    fresh = GatewayProcess(tmp_path / "b")
    try:
        made = httpx.post(fresh.base_url + "/api/v1/keys", json={"name": "ops", "kind": "management"})
        assert made.status_code == 201
        assert _keyless(fresh) == 401  # through this gateway's own API: at once
    finally:
        fresh.stop()
