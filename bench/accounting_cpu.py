"""Accounting's CPU cost per request, measured inside one process: steadier than wrk on a drifting VM.

Two gateway apps live in this process, one without keys (accounting off) and one with a funded key
(SQLite and in-process limits, or PostgreSQL and Redis with --postgres), both in front of the same mock
upstream. They take turns serving blocks of sequential requests through their ASGI interface, and each
block's CPU time of this thread is divided by its requests: machine drift falls on both alike, and the
difference is what accounting costs the serving thread. Requests are sequential (c=1), so nothing is
batched: this is accounting's cost per request at its highest. Work in other threads (the SQLite driver's)
is not counted; `bench.accounting` measures the whole process under load.

Run: .venv/bin/python -m bench.accounting_cpu [--blocks 10] [--requests 400] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench import mock_upstream
from bench.accounting import POSTGRES, REDIS, ROOMY
from bench.table import print_table
from bench.wrk import MODEL, mock_config
from kimi_gateway.config import load_config
from kimi_gateway.http.app import create_app
from kimi_gateway.testing import create_postgres_database, drop_postgres_database, free_port

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}


async def call(app: Any, path: str, payload: object, key: str | None = None) -> bytes:
    """One POST through the app's ASGI interface, as the server would make it; the response body."""
    body = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if key is not None:
        headers.append((b"authorization", b"Bearer " + key.encode()))
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await never  # the client stays
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    await app(scope, receive, send)
    status = sent[0]["status"]
    out = b"".join(m.get("body", b"") for m in sent[1:])
    if status >= 300:
        raise RuntimeError(f"{path} answered {status}: {out[:200]!r}")
    return out


async def start(app: Any) -> None:
    """The app's lifespan startup, left running for the rest of the process."""
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})

    async def send(message: dict[str, Any]) -> None:
        await outbox.put(message)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    asyncio.get_running_loop().create_task(app(scope, inbox.get, send))
    reply = await outbox.get()
    if reply["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"startup failed: {reply}")


async def funded_key(app: Any) -> str:
    made = orjson.loads(await call(app, "/api/v1/keys", {"name": "ops", "kind": "management"}))
    admin = made["key"]
    key = orjson.loads(await call(app, "/api/v1/keys", {"name": "bench", "account_id": "acct_b"}, admin))
    await call(app, "/api/v1/credits/add", {"account_id": "acct_b", "amount": "100000"}, admin)
    return str(key["key"])


async def measure(apps: dict[str, tuple[Any, str | None]], blocks: int, requests: int) -> dict[str, float]:
    for app, _ in apps.values():
        await start(app)
    keys = {name: (key if key != "make" else await funded_key(app)) for name, (app, key) in apps.items()}
    for name, (app, _) in apps.items():
        for _ in range(300):  # warm-up: caches filled, connections pooled
            await call(app, "/v1/chat/completions", CHAT, keys[name])
    per_block: dict[str, list[float]] = {name: [] for name in apps}
    names = list(apps)
    for block in range(blocks):
        for name in names if block % 2 == 0 else reversed(names):
            app = apps[name][0]
            await asyncio.sleep(0.05)  # let the other app's background work finish first
            started = time.thread_time()
            for _ in range(requests):
                await call(app, "/v1/chat/completions", CHAT, keys[name])
            per_block[name].append((time.thread_time() - started) / requests * 1e6)
    return {name: statistics.median(values) for name, values in per_block.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--requests", type=int, default=400, help="sequential requests per block")
    parser.add_argument("--postgres", action="store_true", help="accounting on PostgreSQL and Redis")
    args = parser.parse_args()
    port = free_port()
    mock = mock_upstream.spawn(port)
    database = None
    try:
        time.sleep(0.5)
        with tempfile.TemporaryDirectory() as tmp:
            extra = ""
            if args.postgres:
                database = create_postgres_database(POSTGRES, "kg_bench_")
                extra = (
                    f'database_url = "{database}"\nredis_url = "{REDIS}"\n'
                    f'redis_prefix = "kgbench:{secrets.token_hex(4)}:"\n'
                )
            apps: dict[str, tuple[Any, str | None]] = {}
            for name, settings, key in (("off (no keys)", "", None), ("on", extra, "make")):
                folder = Path(tmp) / str(len(apps))
                folder.mkdir()
                config = folder / "gateway.toml"
                config.write_text(f'data_dir = "{folder}"\n{settings}' + mock_config(port) + ROOMY)
                apps[name] = (create_app(load_config(config)), key)
            cpu = uvloop.run(measure(apps, args.blocks, args.requests))
    finally:
        mock.terminate()
        if database is not None:
            drop_postgres_database(POSTGRES, database)
    off, on = cpu["off (no keys)"], cpu["on"]
    backend = "PostgreSQL + Redis" if args.postgres else "SQLite + in-process"
    print_table(
        [
            ("accounting (non-stream, c=1, one process)", "CPU µs/request", "ratio vs off"),
            ("off (no keys)", f"{off:.0f}", "1.00"),
            (f"on: {backend}", f"{on:.0f}", f"{off / on:.2f}"),
        ]
    )
    print(f"accounting's own cost: {on - off:.0f} µs of the serving thread's CPU per request")


if __name__ == "__main__":
    main()
