"""What auth, billing and rate limits cost: non-streaming RPS at c=32 with accounting off and on, same run.

Three gateways in front of the same mock upstream: no keys (accounting off); keys on SQLite with
in-process limits and holds; keys on PostgreSQL with Redis limits and holds. Target: on >= 0.8x of off.
PostgreSQL and Redis are those of the machine (KG_BENCH_POSTGRES, KG_BENCH_REDIS); their row is left out
when they cannot be reached.

Run on its own: .venv/bin/python -m bench.accounting [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import mock_upstream
from bench.table import print_table
from bench.wrk import MODEL, add_cpu_option, mock_config, pin, run_wrk
from kimi_gateway.testing import GatewayProcess, create_postgres_database, drop_postgres_database, free_port

POSTGRES = os.environ.get("KG_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("KG_BENCH_REDIS", "redis://127.0.0.1:6379/0")
# Limits far above what the load reaches: this measures their cost, not their refusals.
ROOMY = "[accounts]\ntiers = [{ tier = 0, min_recharge = 0, concurrency = 100000, rpm = 100000000 }]\n"


def _config(upstream_port: int, extra: str = "") -> str:
    return mock_config(upstream_port, extra) + ROOMY


def _keyed(gateway: GatewayProcess) -> str:
    """A funded inference key, made through the bootstrap management key."""
    made = httpx.post(gateway.base_url + "/api/v1/keys", json={"name": "ops", "kind": "management"})
    admin = {"Authorization": f"Bearer {made.json()['key']}"}
    key = httpx.post(
        gateway.base_url + "/api/v1/keys", json={"name": "bench", "account_id": "acct_bench"}, headers=admin
    ).json()["key"]
    funded = httpx.post(
        gateway.base_url + "/api/v1/credits/add",
        json={"account_id": "acct_bench", "amount": "100000"},
        headers=admin,
    )
    assert funded.status_code == 200, funded.text
    return str(key)


def _services() -> tuple[str, str] | None:
    """A fresh database and the Redis URL, or None when either is away."""
    import redis

    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping()
        return create_postgres_database(POSTGRES, "kg_bench_"), REDIS
    except Exception as exc:
        print(f"(PostgreSQL+Redis row skipped: {type(exc).__name__}: {exc})", file=sys.stderr)
        return None


def measure(
    upstream_port: int, seconds: int, workdir: Path, rounds: int = 5
) -> list[tuple[str, dict[str, float]]]:
    """All gateways run side by side and take turns under load, `rounds` times: machine noise (this VM
    drifts by 20% between runs) then falls on every setup alike. Each row is its median round."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
    services = _services()
    setups: list[tuple[str, str]] = [("off (no keys)", ""), ("on: SQLite + in-process", "")]
    if services is not None:
        database, redis_url = services
        setups.append(
            (
                "on: PostgreSQL + Redis",
                f'database_url = "{database}"\nredis_url = "{redis_url}"\n'
                f'redis_prefix = "kgbench:{secrets.token_hex(4)}:"\n',
            )
        )
    gateways: list[tuple[GatewayProcess, dict[str, str]]] = []
    results: list[list[dict[str, float]]] = [[] for _ in setups]
    try:
        for i, (_, extra) in enumerate(setups):
            folder = workdir / f"accounting-{i}"
            folder.mkdir()
            gateway = GatewayProcess(folder, _config(upstream_port, extra))
            gateways.append((gateway, {} if i == 0 else {"Authorization": f"Bearer {_keyed(gateway)}"}))
            assert httpx.post(
                gateway.api + "/chat/completions", json=body, headers=gateways[-1][1]
            ).is_success
        for _ in range(rounds):
            for i, (gateway, headers) in enumerate(gateways):
                url = gateway.api + "/chat/completions"
                results[i].append(run_wrk(url, body, 32, seconds, workdir / f"accounting-{i}", headers))
    finally:
        for gateway, _ in gateways:
            gateway.stop()
        if services is not None:
            drop_postgres_database(POSTGRES, services[0])
    return [
        (label, sorted(runs, key=lambda r: r["rps"])[len(runs) // 2])
        for (label, _), runs in zip(setups, results, strict=True)
    ]


def print_report(rows: list[tuple[str, dict[str, float]]]) -> None:
    off = rows[0][1]["rps"]
    header = ("accounting (non-stream, c=32)", "median RPS", "ratio vs off", "p50/p99 ms", "errors")
    table = [header]
    for label, result in rows:
        table.append(
            (
                label,
                f"{result['rps']:.0f}",
                f"{result['rps'] / off:.2f}",
                f"{result['p50']:.2f} / {result['p99']:.2f}",
                f"{result['errors']:.0f}",
            )
        )
    print_table(table)
    print("target: accounting on >= 0.8x of off at c=32")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    add_cpu_option(parser)
    args = parser.parse_args()
    print(pin(args.cpus))
    port = free_port()
    mock = mock_upstream.spawn(port)
    try:
        time.sleep(0.5)
        with tempfile.TemporaryDirectory() as tmp:
            print_report(measure(port, args.seconds, Path(tmp), args.rounds))
    finally:
        mock.terminate()


if __name__ == "__main__":
    main()
