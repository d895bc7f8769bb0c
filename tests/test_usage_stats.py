"""Usage that lasts: activity, apps and uptime from the database, the same on every replica and after a
restart, agreeing with the ledger to the nano-dollar; and the rebuild command agreeing with the buckets
written as requests came in, after two replicas wrote the same buckets at once."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import asyncpg
import httpx
import openai
import pytest

from kimi_gateway.testing import GatewayProcess, wait_until
from tests.billing import K25, Operator, config, credits, start, tiers
from tests.fakes.upstream import Answer, FakeUpstream, Fault
from tests.services import clear_redis, drop_postgres_database, fresh_postgres_database, redis_url
from tests.upstreams import KEY, KEY_ENV

HI = [{"role": "user", "content": "Hi"}]
APP = {"HTTP-Referer": "https://Cool.App.example/", "X-Title": "Cool App"}


def _nano(usd: float) -> int:
    return round(usd * 1_000_000_000)


def _get(gw: GatewayProcess, path: str, key: str, **params: Any) -> Any:
    got = httpx.get(gw.base_url + path, params=params, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert got.status_code == 200, got.text
    return got.json()["data"]


def _wait(check: Any, timeout: float = 15.0) -> Any:
    return wait_until(check, timeout, 0.1)


def _traffic(gw: GatewayProcess, key: str, moon: FakeUpstream) -> int:
    """Requests in all three formats, with and without app headers; returns the cost clients were told,
    in nano-dollars."""
    moon.script(*[Answer(prompt_tokens=120, completion_tokens=30, cached_tokens=20)] * 6)
    oa = openai.OpenAI(base_url=gw.api, api_key=key, max_retries=0, default_headers=APP)
    told = 0
    reply = oa.chat.completions.create(model=K25, messages=HI)  # type: ignore[arg-type]
    told += _nano((reply.usage.model_extra or {})["cost"])  # type: ignore[union-attr]
    for chunk in oa.chat.completions.create(
        model=K25, messages=HI, stream=True, stream_options={"include_usage": True}
    ):  # type: ignore[arg-type]
        if chunk.usage is not None and not chunk.choices:
            told += _nano((chunk.usage.model_extra or {})["cost"])
    response = oa.responses.create(model=K25, input="Hi", store=False)
    told += _nano(response.usage.model_extra["cost"])  # type: ignore[union-attr,index]
    # No HTTP-Referer: counted, but not an app. A browser's own Referer does not make one either.
    plain = openai.OpenAI(
        base_url=gw.api,
        api_key=key,
        max_retries=0,
        default_headers={"Referer": "https://browser.example/", "X-Title": "Not an app"},
    )
    told += _nano((plain.chat.completions.create(model=K25, messages=HI).usage.model_extra or {})["cost"])  # type: ignore[arg-type,union-attr]
    claude = anthropic.Anthropic(
        base_url=gw.base_url,
        api_key=key,
        max_retries=0,
        default_headers={"HTTP-Referer": "cool.app.example", "X-OpenRouter-Title": "Cool App"},
    )
    claude.messages.create(model=K25, max_tokens=50, messages=HI)  # type: ignore[arg-type]
    told += _nano(0.6 * 100 / 1e6 + 0.15 * 20 / 1e6 + 3.0 * 30 / 1e6)  # Anthropic's usage carries no cost
    # Over-long app headers are cut, never fatal.
    long = httpx.post(
        gw.api + "/chat/completions",
        json={"model": K25, "messages": HI},
        timeout=30,
        headers={
            "Authorization": f"Bearer {key}",
            "HTTP-Referer": "https://long.example/" + "p" * 2000,
            "X-Title": "T" * 1000,
        },
    )
    assert long.status_code == 200
    told += _nano(long.json()["usage"]["cost"])
    return told


@pytest.fixture()
def moon(fakes: dict[str, FakeUpstream]) -> FakeUpstream:
    return fakes["moon"]


def test_activity_apps_and_uptime_last_across_a_restart(tmp_path: Path, moon: FakeUpstream) -> None:
    text = config(moon)
    gw = start(tmp_path / "gw", text)
    try:
        ops = Operator(gw)
        key = ops.key_for("acct_stats")
        ops.recharge("acct_stats", "10")
        told = _traffic(gw, key, moon)
        # Uptime: a 429 and an upstream 400 are not the provider's errors; a 500 is.
        moon.script(Fault("status", status=429, retry_after=0.01))
        httpx.post(
            gw.api + "/chat/completions",
            json={"model": K25, "messages": HI},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        time.sleep(0.05)
        moon.script(Fault("status", status=400, message="bad request"))
        httpx.post(
            gw.api + "/chat/completions",
            json={"model": K25, "messages": HI},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        moon.script(Fault("status", status=500))
        httpx.post(
            gw.api + "/chat/completions",
            json={"model": K25, "messages": HI},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

        charged = _nano(_wait(lambda: (c := credits(gw, key))["total_usage"] > 0 and c)["total_usage"])
        rows = _wait(
            lambda: (r := _get(gw, "/api/v1/activity", key)) and sum(x["requests"] for x in r) >= 9 and r
        )
        assert sum(_nano(r["usage"]) for r in rows) == charged == told
        assert {r["model"] for r in rows} == {K25}
        # Requests no provider answered (the 429, 400 and 500 above) count without a provider.
        assert {r["provider_name"] for r in rows} == {"Moonshot AI", None}
        assert (
            sum(r["prompt_tokens"] for r in rows) == 6 * 120
            and sum(r["cached_tokens"] for r in rows) == 6 * 20
        )
        assert rows[0]["date"] == time.strftime("%Y-%m-%d", time.gmtime())

        before = _get(gw, f"/api/v1/models/{K25}/stats", key, period="week")
        endpoints_before = _get(gw, f"/api/v1/models/{K25}/endpoints", key)
    finally:
        gw.stop()
    gw = start(tmp_path / "gw", text)  # the same database: nothing of the above is lost
    try:
        ops = Operator(gw, ops.key)
        assert sum(_nano(r["usage"]) for r in _get(gw, "/api/v1/activity", key)) == charged
        stats = _get(gw, f"/api/v1/models/{K25}/stats", key, period="week")
        assert stats == before
        apps = stats["apps"]
        # Only requests with HTTP-Referer are apps; spellings of one URL are one app; long values are cut.
        assert [a["url"] for a in apps][:1] == ["cool.app.example"] and apps[0]["name"] == "Cool App"
        assert apps[0]["requests"] == 4 and apps[0]["tokens"] == 4 * 150
        assert {a["url"] for a in apps} == {"cool.app.example", ("long.example/" + "p" * 2000)[:500]}
        assert all(len(a["name"]) <= 200 for a in apps) and "browser.example" not in str(apps)
        assert not any("acct" in str(a) for a in apps)  # public figures: no account
        day = stats["activity"][-1]
        assert day["cached_tokens"] == 6 * 20 and day["prompt_tokens"] == 6 * 100
        # Uptime: 6 successes and one 500 count; the 429 and the client's 400 do not.
        moon_uptime = stats["uptime"]["moon"]
        assert sum(p["successes"] for p in moon_uptime) == 6 and sum(p["errors"] for p in moon_uptime) == 1
        assert sum(p["rate_limited"] for p in moon_uptime) == 1
        endpoint = _get(gw, f"/api/v1/models/{K25}/endpoints", key)["endpoints"][0]
        assert endpoint["uptime_last_1d"] == pytest.approx(100 * 6 / 7, abs=0.01)
        assert endpoint["uptime_last_1d"] == endpoints_before["endpoints"][0]["uptime_last_1d"]
        # The activity of another account is a management key's to read.
        other = ops.key_for("acct_other")
        assert _get(gw, "/api/v1/activity", other) == []
        assert len(_get(gw, "/api/v1/activity", ops.key, account_id="acct_stats")) >= 1
        refused = httpx.get(
            gw.base_url + "/api/v1/activity",
            params={"account_id": "acct_stats"},
            headers={"Authorization": f"Bearer {other}"},
        )
        assert refused.status_code == 403
        bad = httpx.get(
            gw.base_url + "/api/v1/activity",
            params={"date": "yesterday"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert bad.status_code == 400
    finally:
        gw.stop()


async def _buckets(url: str) -> list[tuple[Any, ...]]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT * FROM usage_buckets "
            "ORDER BY granularity, start, model, provider, account_id, key_hash, app"
        )
        return [tuple(row.values()) for row in rows]
    finally:
        await connection.close()


@pytest.fixture()
def postgres() -> Iterator[str]:
    url = fresh_postgres_database()
    yield url
    drop_postgres_database(url)


def test_two_replicas_add_to_the_same_buckets_and_a_rebuild_agrees(
    tmp_path: Path, moon: FakeUpstream, postgres: str
) -> None:
    prefix = f"kgstats:{secrets.token_hex(4)}:"
    extra = f'database_url = "{postgres}"\nredis_url = "{redis_url()}"\nredis_prefix = "{prefix}"\n'
    text = config(moon, tiers((0, 0, 200, 10_000)), extra=extra)  # room for 80 at once, across both
    first = start(tmp_path / "a", text)
    second = start(tmp_path / "b", text)
    try:
        ops = Operator(first)
        key = ops.key_for("acct_pair")
        ops.recharge("acct_pair", "10")
        moon.default = Answer(prompt_tokens=50, completion_tokens=10)
        _wait(lambda: httpx.get(second.api + "/models").status_code == 401)  # the second sees the keys

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                return await asyncio.gather(
                    *(
                        client.post(
                            gw.api + "/chat/completions",
                            json={"model": K25, "messages": HI},
                            headers={"Authorization": f"Bearer {key}", **APP},
                        )
                        for gw in (first, second)
                        for _ in range(40)
                    )
                )

        assert [r.status_code for r in asyncio.run(burst())] == [200] * 80
        charged = _nano(
            _wait(lambda: (c := credits(first, key))["total_usage"] >= 80 * 0.00006 - 1e-9 and c)[
                "total_usage"
            ]
        )
        rows = _wait(
            lambda: (r := _get(second, "/api/v1/activity", key)) and sum(x["requests"] for x in r) == 80 and r
        )
        assert sum(x["requests"] for x in rows) == 80 and sum(_nano(x["usage"]) for x in rows) == charged
        assert _get(first, "/api/v1/activity", key) == rows  # the same on every replica
        incremental = asyncio.run(_buckets(postgres))
    finally:
        first.stop()
        second.stop()
        clear_redis(prefix)
    env = {**os.environ, "KIMI_GATEWAY_CONFIG": str(tmp_path / "a" / "gateway.toml"), KEY_ENV: KEY}
    rebuilt = subprocess.run(
        [sys.executable, "-m", "kimi_gateway", "stats", "rebuild"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "from 80 generation record(s)" in rebuilt.stdout
    assert asyncio.run(_buckets(postgres)) == incremental


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_the_generation_log_pages_newest_first_per_account(
    tmp_path: Path, moon: FakeUpstream, store: str
) -> None:
    """The console's log: an account's generations newest first, a page at a time, no one else's; and
    the key's requests in the last minute."""
    url = fresh_postgres_database() if store == "postgres" else None
    extra = f'database_url = "{url}"\n' if url else ""
    gw = start(tmp_path / "gw", config(moon, extra=extra))
    try:
        ops = Operator(gw)
        key, other = ops.key_for("acct_log"), ops.key_for("acct_other")
        ops.recharge("acct_log", "10")
        oa = openai.OpenAI(base_url=gw.api, api_key=key, max_retries=0, default_headers=APP)
        made = []
        for _ in range(3):
            made.append(oa.chat.completions.create(model=K25, messages=HI).id)  # type: ignore[arg-type]
            time.sleep(0.02)  # distinct creation times, so the order is the order of the requests

        def page(k: str, **params: Any) -> dict[str, Any]:
            got = httpx.get(
                gw.base_url + "/api/v1/generations", params=params, headers={"Authorization": f"Bearer {k}"}
            )
            assert got.status_code == 200, got.text
            body: dict[str, Any] = got.json()
            return body

        _wait(lambda: len(page(key)["data"]) == 3)
        first, second = page(key, limit=2), page(key, limit=2, offset=2)
        assert [g["id"] for g in first["data"] + second["data"]] == made[::-1]
        assert first["has_more"] is True and second["has_more"] is False
        row = first["data"][0]
        assert row["model"] == K25 and row["provider_name"] == "Moonshot AI" and row["total_cost"] > 0
        assert row["app_title"] == "Cool App" and row["status"] == "success"
        assert page(other)["data"] == []
        # Bounded at the edge: a page of at most 100, an offset of at most 10,000.
        bad = httpx.get(
            gw.base_url + "/api/v1/generations",
            params={"limit": 1000},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
        assert _get(gw, "/api/v1/key", key)["requests_last_minute"] == 3
        assert _get(gw, "/api/v1/key", other)["requests_last_minute"] == 0
    finally:
        gw.stop()
        if url:
            drop_postgres_database(url)
