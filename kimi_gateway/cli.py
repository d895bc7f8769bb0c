"""The `kimi-gateway` command: serve, list models, chat from the terminal."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from httpx_sse import connect_sse

from kimi_gateway import __version__
from kimi_gateway.config import CONFIG_ENV, ConfigError, GatewayConfig, environment_keys, load_config, masked
from kimi_gateway.logs import LOG_LEVEL_ENV, event, setup_logging
from kimi_gateway.stats.metrics import METRICS_DIR_ENV

if TYPE_CHECKING:
    from redis.asyncio import Redis


def app_factory() -> object:
    """What uvicorn imports in each worker process: config comes from the environment."""
    from kimi_gateway.http import protocol
    from kimi_gateway.http.app import create_app

    config = load_config()
    setup_logging(os.environ.get(LOG_LEVEL_ENV) or config.server.log_level, config.server.log_format)
    protocol.configure(config.server)
    return create_app(config)


def _export_config(path: str | None) -> GatewayConfig:
    if path:
        # Worker processes read the config from the environment, so they see the same file.
        os.environ[CONFIG_ENV] = str(Path(path).resolve())
    return load_config()


LOOPBACK = ("127.", "localhost", "::1")


async def _key_count(config: GatewayConfig) -> int:
    from kimi_gateway.accounts.keys import KeyStore
    from kimi_gateway.storage import Database, database_url

    db = Database(database_url(config.database_url, config.data_dir))
    try:
        await db.migrate()
        return len(await KeyStore(db).list())
    finally:
        await db.close()


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    config = _export_config(args.config)
    host = args.host or config.server.host
    port = args.port or config.server.port
    setup_logging(config.server.log_level, config.server.log_format)
    keyed = (not host.startswith(LOOPBACK) or (args.workers > 1 and not config.redis_url)) and asyncio.run(
        _key_count(config)
    ) > 0
    if not host.startswith(LOOPBACK) and not keyed:
        print(
            f"refusing to serve on {host} without API keys: anyone could use it. Create one with "
            "`kimi-gateway keys create --name NAME`, or bind to 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1 and not config.redis_url and keyed:
        # Each worker would hold credit on its own: two could each admit the last dollar's worth.
        print(
            f"refusing to serve {args.workers} workers without Redis: credit holds and rate limits would be "
            "kept per worker, and an account could spend past its balance. Set `redis_url`, or serve one "
            "worker.",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1:
        # Each worker writes its metrics here, and whichever answers a scrape adds them all up.
        folder = config.data_dir.expanduser() / "metrics"
        shutil.rmtree(folder, ignore_errors=True)
        os.environ[METRICS_DIR_ENV] = str(folder)
    _banner(config, host, port, args.workers)
    uvicorn.run(
        "kimi_gateway.cli:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=args.workers,
        loop="uvloop",
        http="kimi_gateway.http.protocol:GatewayProtocol",  # httptools, with header and connection limits
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=config.server.keep_alive_seconds,
        timeout_graceful_shutdown=config.server.shutdown_seconds,
        root_path=config.server.root_path,
    )
    return 0


def _banner(config: GatewayConfig, host: str, port: int, workers: int) -> None:
    """Where to point a client and a browser, first thing in the log."""
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}{config.server.root_path}"
    fields: dict[str, Any] = {"api": f"{base}/v1"}
    if config.server.web:
        fields.update(pages=f"{base}/models", chat=f"{base}/chat", console=f"{base}/console")
    fields.update(
        docs=f"{base}/docs",
        workers=workers,
        data_dir=str(config.data_dir),
        # Which database, by its masked URL: a DATABASE_URL from the shell is used over the file's.
        database=masked(config)["database_url"] or "sqlite (data_dir)",
        redis=bool(config.redis_url),
    )
    event(f"kimi-gateway {__version__} serving", **fields)


def _models(args: argparse.Namespace) -> int:
    from kimi_gateway.runtime import build_gateway

    gateway = build_gateway(_export_config(args.config))
    rows = [("MODEL", "CONTEXT", "$/M IN", "$/M CACHED", "$/M OUT", "PROVIDERS")]
    for card in gateway.catalog:
        providers = [e.provider for e in gateway.router.endpoints_for(card.id)]
        rows.append(
            (
                card.id,
                str(card.context_length),
                f"{card.pricing.input:.2f}",
                f"{card.pricing.cached:.2f}",
                f"{card.pricing.output:.2f}",
                ",".join(providers) or "unavailable (no provider configured)",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reachable(base_url: str) -> bool:
    try:
        return httpx.get(base_url.rstrip("/").removesuffix("/v1") + "/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _in_process_server(config_path: str | None) -> str:
    """No gateway is running: start one in this process, on a free loopback port."""
    import uvicorn

    _export_config(config_path)
    os.environ[LOG_LEVEL_ENV] = "error"
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            "kimi_gateway.cli:app_factory", factory=True, host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def stop() -> None:
        # A clean shutdown before the interpreter's: tearing down with the engine's thread still inside
        # llama.cpp crashes the process now and then (SIGSEGV at exit).
        server.should_exit = True
        thread.join(timeout=30)

    atexit.register(stop)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.started:
            return base_url
        time.sleep(0.05)
    raise SystemExit("the in-process gateway did not start")


def _default_model(config: GatewayConfig) -> str:
    from kimi_gateway.catalog import load_catalog

    return next((card.id for card in load_catalog(config.models) if card.local), "smollm2-135m-instruct")


def _chat(args: argparse.Namespace) -> int:
    config = _export_config(args.config)
    base_url = (
        args.base_url or os.environ.get("KIMI_GATEWAY_URL") or f"http://127.0.0.1:{config.server.port}/v1"
    )
    if not args.base_url and not _reachable(base_url):
        base_url = _in_process_server(args.config)
    messages = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": args.prompt})
    body: dict[str, object] = {
        "model": args.model or _default_model(config),
        "messages": messages,
        "stream": True,
    }
    if args.max_tokens:
        body["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        body["temperature"] = args.temperature
    headers = {"Authorization": f"Bearer {args.api_key or os.environ.get('KIMI_GATEWAY_API_KEY', 'local')}"}
    with (
        httpx.Client(timeout=httpx.Timeout(10.0, read=None)) as client,
        connect_sse(client, "POST", f"{base_url}/chat/completions", json=body, headers=headers) as source,
    ):
        if source.response.status_code != 200:
            source.response.read()
            print(f"error {source.response.status_code}: {source.response.text}", file=sys.stderr)
            return 1
        for sse in source.iter_sse():
            if sse.data == "[DONE]":
                break
            chunk = orjson.loads(sse.data)
            if "error" in chunk:
                print(f"\nerror: {chunk['error'].get('message')}", file=sys.stderr)
                return 1
            for choice in chunk.get("choices", ()):
                text = choice.get("delta", {}).get("content")
                if text:
                    sys.stdout.write(text)
                    sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _redis(config: GatewayConfig) -> Redis | None:
    """Running replicas share state through Redis, when the config names it: the CLI tells them too."""
    if not config.redis_url:
        return None
    from redis.asyncio import Redis

    return Redis.from_url(config.redis_url)


def _keys(args: argparse.Namespace) -> int:
    from kimi_gateway.accounts.changes import Changes
    from kimi_gateway.accounts.keys import KeyStore
    from kimi_gateway.storage import Database, database_url

    config = _export_config(args.config)

    async def run() -> int:
        db = Database(database_url(config.database_url, config.data_dir))
        await db.migrate()
        redis = _redis(config)
        store = KeyStore(db, Changes(redis, config.redis_prefix))
        try:
            if args.action == "create":
                key, record = await store.create(
                    name=args.name,
                    kind=args.kind,
                    account_id=args.account,
                    rpm=args.rpm,
                    credit_limit=Decimal(args.limit) if args.limit is not None else None,
                )
                print(key)
                print(
                    f"# {record.kind} key '{record.name}', account {record.account_id}, hash {record.hash}",
                    file=sys.stderr,
                )
            elif args.action == "list":
                for r in await store.list():
                    state = "disabled" if r.disabled else "active"
                    print(f"{r.hash}  {r.prefix:14s}  {r.kind:10s}  {state:8s}  {r.account_id}  {r.name}")
            elif not await store.set_disabled(args.hash, True):
                print(f"error: no key with hash {args.hash}", file=sys.stderr)
                return 1
            return 0
        finally:
            if redis is not None:
                await redis.aclose()
            await db.close()

    return asyncio.run(run())


def _credits(args: argparse.Namespace) -> int:
    from kimi_gateway.accounts.ledger import Ledger, UnknownAccount
    from kimi_gateway.money import nano, usd
    from kimi_gateway.storage import Database, database_url

    config = _export_config(args.config)

    async def run() -> int:
        db = Database(database_url(config.database_url, config.data_dir))
        await db.migrate()
        ledger = Ledger(db)
        try:
            if args.action == "add":
                try:
                    amount = Decimal(args.amount)
                    entry = await ledger.credit(
                        args.account, amount, "voucher" if args.voucher else "recharge"
                    )
                except UnknownAccount:
                    print(f"error: no account {args.account}", file=sys.stderr)
                    return 1
                except (ValueError, ArithmeticError) as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
                redis = _redis(config)
                if redis is not None:
                    # Running replicas hold the live balance in Redis: move it there too, and tell them
                    # the account changed (its tier).
                    from kimi_gateway.accounts.changes import ACCOUNT, Changes
                    from kimi_gateway.accounts.holds_redis import RedisHolds

                    try:
                        await RedisHolds(redis, ledger, config.redis_prefix).credited(
                            args.account, nano(amount)
                        )
                        await Changes(redis, config.redis_prefix).publish(ACCOUNT, args.account)
                    finally:
                        await redis.aclose()
                print(entry)
            totals = await ledger.totals(args.account)
            print(
                f"account {args.account}: balance ${usd(totals.balance):.6f} "
                f"(recharged ${usd(totals.recharged):.2f}, vouchers ${usd(totals.vouchers):.2f}, "
                f"charged ${usd(totals.charged):.6f})",
                file=sys.stderr,
            )
            return 0
        finally:
            await db.close()

    return asyncio.run(run())


def _db(args: argparse.Namespace) -> int:
    from kimi_gateway.storage import database_url
    from kimi_gateway.storage.db import upgrade

    config = _export_config(args.config)
    upgrade(database_url(config.database_url, config.data_dir))
    print("database schema is at the newest migration")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from kimi_gateway.stats import rollups
    from kimi_gateway.storage import Database, database_url

    config = _export_config(args.config)
    since = datetime(1970, 1, 1, tzinfo=UTC)
    if args.since:
        since = datetime.fromisoformat(args.since).replace(tzinfo=UTC)

    async def run() -> int:
        db = Database(database_url(config.database_url, config.data_dir))
        await db.migrate()
        try:
            read = await rollups.rebuild(db, since)
        finally:
            await db.close()
        print(f"usage buckets rebuilt from {read} generation record(s) since {since.date().isoformat()}")
        return 0

    return asyncio.run(run())


def _selfhost(args: argparse.Namespace) -> int:
    from kimi_gateway.selfhost import render, render_kubernetes

    try:
        if args.kubernetes:
            print(render_kubernetes(args.engine, args.model, args.port), end="")
        else:
            print(render(args.engine, args.model, args.host, args.port))
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kimi-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kimi-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI-compatible server")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument("--config", default=None, help="TOML config file")
    serve.add_argument("--workers", type=int, default=1, help="worker processes")
    serve.set_defaults(func=_serve)

    models = sub.add_parser("models", help="list the model catalog and which models can be served")
    models.add_argument("--config", default=None)
    models.set_defaults(func=_models)

    chat = sub.add_parser("chat", help="ask a model and stream the answer to the terminal")
    chat.add_argument("prompt")
    chat.add_argument("--model", default=None, help="model id (default: the embedded local model)")
    chat.add_argument("--system", default=None, help="system prompt")
    chat.add_argument("--max-tokens", type=int, default=None)
    chat.add_argument("--temperature", type=float, default=None)
    chat.add_argument(
        "--base-url", default=None, help="gateway URL (default: a running local one, else in-process)"
    )
    chat.add_argument("--api-key", default=None)
    chat.add_argument("--config", default=None)
    chat.set_defaults(func=_chat)
    keys = sub.add_parser("keys", help="create, list or disable API keys")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it (shown only once)")
    create.add_argument("--name", required=True)
    create.add_argument("--kind", choices=["inference", "management"], default="inference")
    create.add_argument("--account", default=None, help="an account id (default: a new account)")
    create.add_argument("--limit", default=None, help="credit limit in USD")
    create.add_argument("--rpm", type=int, default=None, help="the key's own requests-per-minute limit")
    keys_sub.add_parser("list", help="list keys (hashes and prefixes only)")
    disable = keys_sub.add_parser("disable", help="disable a key by its hash")
    disable.add_argument("hash")
    for p in (keys, create, disable, keys_sub.choices["list"]):
        p.add_argument("--config", default=None)
    keys.set_defaults(func=_keys)

    credits = sub.add_parser("credits", help="recharge an account, or show its balance")
    credits_sub = credits.add_subparsers(dest="action", required=True)
    add = credits_sub.add_parser("add", help="add credits (USD) to an account's ledger")
    add.add_argument("account")
    add.add_argument("amount", help="USD, e.g. 10 or 0.50")
    add.add_argument("--voucher", action="store_true", help="a voucher: spent first, never negative")
    show = credits_sub.add_parser("show", help="an account's balance")
    show.add_argument("account")
    for p in (credits, add, show):
        p.add_argument("--config", default=None)
    credits.set_defaults(func=_credits)

    db = sub.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=["upgrade"])
    db.add_argument("--config", default=None)
    db.set_defaults(func=_db)

    stats = sub.add_parser("stats", help="usage statistics maintenance")
    stats.add_argument("action", choices=["rebuild"], help="recompute the usage buckets from the records")
    stats.add_argument("--since", default=None, help="a UTC date, YYYY-MM-DD (default: every record)")
    stats.add_argument("--config", default=None)
    stats.set_defaults(func=_stats)

    config = sub.add_parser("config", help="the effective configuration")
    config.add_argument("action", choices=["show"], help="print it (file, then environment), secrets masked")
    config.add_argument("--config", default=None)
    config.set_defaults(func=_config)

    selfhost = sub.add_parser(
        "selfhost", help="print the command to self-host a Kimi model, and its config entry"
    )
    selfhost.add_argument("engine", choices=["vllm", "sglang"])
    selfhost.add_argument("model")
    selfhost.add_argument("--host", default="127.0.0.1", help="where the engine will listen")
    selfhost.add_argument("--port", type=int, default=8000)
    selfhost.add_argument(
        "--kubernetes", action="store_true", help="a Deployment and a Service instead of a command line"
    )
    selfhost.set_defaults(func=_selfhost)
    return parser


def _config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    overridden = environment_keys()
    if overridden:
        print("# set from the environment: " + ", ".join(overridden))
    print(orjson.dumps(masked(config), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:  # a bad key, in the file or the environment: said plainly, no traceback
        print(f"kimi-gateway: {exc}", file=sys.stderr)
        return 2
    return code
