"""The fault matrix: PostgreSQL or Redis unreachable under steady traffic, and a replica killed mid-stream
while the database is away. Real gateway processes, real PostgreSQL and Redis, a TCP proxy in front of the
service that a test cuts and restores. Afterwards, the ledger equals what clients were told, to the
nano-dollar, with nothing written twice."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import redis

from kimi_gateway.testing import GatewayProcess
from tests.billing import K25, Operator, chat, config, generation, sdk, start, tiers
from tests.fakes.proxy import TcpProxy
from tests.fakes.upstream import Answer, FakeUpstream
from tests.services import clear_redis, drop_postgres_database, fresh_postgres_database, redis_url

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture()
def moon(fakes: dict[str, FakeUpstream]) -> FakeUpstream:
    return fakes["moon"]


@pytest.fixture()
def postgres() -> Iterator[tuple[str, TcpProxy]]:
    """A fresh database, and a proxy the gateways reach it through."""
    url = fresh_postgres_database()
    where = urlsplit(url)
    proxy = TcpProxy(where.hostname or "127.0.0.1", where.port or 5432)
    proxied = url.replace(f"{where.hostname}:{where.port}", f"127.0.0.1:{proxy.port}")
    yield proxied, proxy
    proxy.stop()
    drop_postgres_database(url)


@pytest.fixture()
def redis_proxy() -> Iterator[tuple[str, str, TcpProxy]]:
    direct = redis_url()
    where = urlsplit(direct)
    proxy = TcpProxy(where.hostname or "127.0.0.1", where.port or 6379)
    prefix = f"kgfault:{secrets.token_hex(4)}:"
    yield f"redis://127.0.0.1:{proxy.port}/0", prefix, proxy
    proxy.stop()
    clear_redis(prefix)


def _direct(url: str, proxy: TcpProxy) -> str:
    return url.replace(f"127.0.0.1:{proxy.port}", f"{proxy.target[0]}:{proxy.target[1]}")


def _charges(database: str, account: str) -> list[tuple[str, Decimal]]:
    async def query() -> list[tuple[str, Decimal]]:
        connection = await asyncpg.connect(database)
        try:
            rows = await connection.fetch(
                "SELECT id, amount FROM ledger_entries WHERE kind = 'charge' AND account_id = $1", account
            )
            return [(row["id"], row["amount"]) for row in rows]
        finally:
            await connection.close()

    return asyncio.run(query())


@dataclass
class Traffic:
    """Requests one after another from a thread, each remembered with when it was sent and its answer."""

    targets: list[tuple[GatewayProcess, str]]
    results: list[tuple[float, int, Decimal | None, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                gw, key = self.targets[i % len(self.targets)]
                i += 1
                sent = time.monotonic()
                response = client.post(
                    gw.api + "/chat/completions",
                    json={"model": K25, "messages": HI},
                    headers={"Authorization": f"Bearer {key}"},
                )
                cost = Decimal(str(response.json()["usage"]["cost"])) if response.status_code == 200 else None
                self.results.append((sent, response.status_code, cost, time.monotonic() - sent))
                time.sleep(0.03)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def around_outage(self, proxy: TcpProxy, seconds: float = 10) -> tuple[float, float]:
        """Traffic for 3 s, then `seconds` with the proxied service cut, then 4 s more: (cut, restored)."""
        self.start()
        time.sleep(3)
        cut_at = time.monotonic()
        proxy.cut()
        time.sleep(seconds)
        proxy.restore()
        back_at = time.monotonic()
        time.sleep(4)
        self.stop()
        return cut_at, back_at

    def between(self, start: float, end: float) -> list[tuple[float, int, Decimal | None, float]]:
        return [r for r in self.results if start <= r[0] < end]

    @property
    def reported(self) -> Decimal:
        return sum((r[2] for r in self.results if r[2] is not None), Decimal(0))


def _settled(database: str, account: str, expected: Decimal, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        charges = _charges(database, account)
        if (len(charges) == count and sum(a for _, a in charges) == expected) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert len(charges) == count, (len(charges), count)
    assert sum(a for _, a in charges) == expected  # to the nano-dollar
    assert len({i for i, _ in charges}) == len(charges)  # nothing twice


def test_postgres_away_for_10_seconds_under_steady_traffic(
    tmp_path: Path, moon: FakeUpstream, postgres: tuple[str, TcpProxy]
) -> None:
    database, proxy = postgres
    gw = start(
        tmp_path / "gw", config(moon, tiers((0, 0, 50, 10_000)), extra=f'database_url = "{database}"\n')
    )
    try:
        ops = Operator(gw)
        key = ops.key_for("acct_pg")
        ops.recharge("acct_pg", "10")
        traffic = Traffic([(gw, key)])
        cut_at, back_at = traffic.around_outage(proxy)

        statuses = [s for _, s, _, _ in traffic.results]
        assert set(statuses) <= {200, 503}, sorted(set(statuses))  # never a 500
        during = traffic.between(cut_at, back_at)
        served = [r for r in during if r[1] == 200]
        # The documented policy: keys, tiers and balances checked within cache_seconds + 30 s keep serving.
        assert len(served) == len(during) > 20, (len(served), len(during))
        count = statuses.count(200)
        _settled(_direct(database, proxy), "acct_pg", traffic.reported, count)
        latencies = sorted(r[3] for r in during)
        print(
            f"\nPostgreSQL away 10 s: {len(served)}/{len(during)} served during the outage, "
            f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms; {count} charges, all written after"
        )
        errors = [r for r in gw.log_records() if r.get("level") == "error"]
        assert len(errors) <= 2, errors  # one line per outage, not one per retry
    finally:
        gw.stop()


def test_redis_away_for_10_seconds_with_two_replicas(
    tmp_path: Path, moon: FakeUpstream, postgres: tuple[str, TcpProxy], redis_proxy: tuple[str, str, TcpProxy]
) -> None:
    database, _ = postgres
    redis_at, prefix, proxy = redis_proxy
    text = config(
        moon,
        tiers((0, 0, 50, 10_000)),
        extra=f'database_url = "{database}"\nredis_url = "{redis_at}"\nredis_prefix = "{prefix}"\n',
    )
    a = start(tmp_path / "a", text)
    ops = Operator(a)
    b = start(tmp_path / "b", text)
    try:
        key = ops.key_for("acct_redis")
        ops.recharge("acct_redis", "10")
        traffic = Traffic([(a, key), (b, key)])
        cut_at, back_at = traffic.around_outage(proxy)

        statuses = [s for _, s, _, _ in traffic.results]
        assert set(statuses) <= {200, 503}, sorted(set(statuses))
        # Requests sent while Redis is surely away (not in the moment it is cut, nor in the last second
        # before it is back, when one may be admitted on a reconnect that comes in time).
        during = traffic.between(cut_at + 0.5, back_at - 1.0)
        # The documented policy: fail closed. Limits and credit cannot be checked, so nothing is admitted.
        assert during and all(r[1] == 503 for r in during), [r[1] for r in during]
        after = traffic.between(back_at + 2, time.monotonic())
        assert after and all(r[1] == 200 for r in after)
        count = statuses.count(200)
        _settled(_direct(database, postgres[1]), "acct_redis", traffic.reported, count)
        live = redis.Redis.from_url(_direct(redis_at, proxy))
        bal, held = live.hmget(f"{prefix}acct:acct_redis", ["bal", "held"])
        live.close()
        assert int(held or 0) == 0
        assert int(bal) == 10 * 10**9 - int(traffic.reported * 10**9)

        # Limits are exact again: a fresh account with 20 requests a minute, 40 requests on two replicas.
        limited = ops.key_for("acct_after")
        ops.recharge("acct_after", "1")
        gateways = [a, b]

        async def burst() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:
                answers = await asyncio.gather(
                    *(
                        client.post(
                            gateways[i % 2].api + "/chat/completions",
                            json={"model": K25, "messages": HI},
                            headers={"Authorization": f"Bearer {limited}"},
                        )
                        for i in range(40)
                    )
                )
            return [r.status_code for r in answers]

        httpx.patch(  # a key limit of 20 rpm, through the account's own management key
            a.base_url + "/api/v1/keys/" + hashlib.sha256(limited.encode()).hexdigest(),
            json={"rate_limit_rpm": 20},
            headers={"Authorization": f"Bearer {ops.key_for('acct_after', kind='management')}"},
        ).raise_for_status()
        time.sleep(0.3)
        answers = asyncio.run(burst())
        assert answers.count(200) == 20 and answers.count(429) == 20, sorted(set(answers))
    finally:
        a.stop()
        b.stop()


def test_kill_9_mid_stream_while_the_database_is_away(
    tmp_path: Path, moon: FakeUpstream, postgres: tuple[str, TcpProxy]
) -> None:
    database, proxy = postgres
    text = config(moon, tiers((0, 0, 50, 10_000)), flush_seconds=0.1, extra=f'database_url = "{database}"\n')
    workdir = tmp_path / "gw"
    gw = start(workdir, text)
    ops = Operator(gw)
    key = ops.key_for("acct_kill")
    ops.recharge("acct_kill", "1")
    costs = [Decimal(str(chat(gw, key).json()["usage"]["cost"]))]

    proxy.cut()
    costs += [Decimal(str(chat(gw, key).json()["usage"]["cost"])) for _ in range(3)]  # journal only
    moon.default = Answer(content="a b c d e f g h i j k l", chunk_delay=0.5)
    stream = sdk(gw, key).chat.completions.create(model=K25, messages=HI, stream=True)  # type: ignore[arg-type]
    open_id = next(iter(stream)).id
    os.kill(gw.proc.pid, signal.SIGKILL)
    gw.proc.wait()
    stream.close()
    moon.default = Answer()
    proxy.restore()

    for _ in range(2):  # the second start must find nothing left to do, and count nothing twice
        gw = start(workdir, text)
        try:
            record = generation(gw, key, open_id)
            assert record["status"] == "interrupted" and record["total_cost"] == 0
        finally:
            gw.stop()
    _settled(_direct(database, proxy), "acct_kill", sum(costs, Decimal(0)), len(costs))
