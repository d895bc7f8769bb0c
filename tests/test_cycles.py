"""A request leaves no reference cycles behind: everything it made is freed when it ends, by reference
counts alone. A cycle per request (an object holding a bound method of its owner, say) leaves its whole
request for the garbage collector, whose passes then cost more than the request itself (one such cycle
added 6% to `bench.instructions`). The app runs in-process against a fake upstream, keyed and charged,
streamed and not, in each wire format; the collector finds (almost) nothing afterwards."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from bench.accounting_cpu import call, funded_key, start
from kimi_gateway.config import load_config
from kimi_gateway.http.app import create_app
from tests import billing
from tests.billing import K25
from tests.fakes.upstream import FakeUpstream

REQUESTS = 40


def test_requests_leave_no_cycles_for_the_collector(
    fake_servers: dict[str, FakeUpstream], tmp_path: Path
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n' + billing.config(fake_servers["moon"]))
    import os

    from tests.upstreams import KEY, KEY_ENV

    os.environ[KEY_ENV] = KEY
    chat = {"model": K25, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}
    anthropic = {**chat, "max_tokens": 16}
    responses = {"model": K25, "input": "Hi", "store": False}

    async def scenario() -> int:
        app = create_app(load_config(str(path)))
        await start(app)
        key = await funded_key(app)

        async def round_() -> None:
            for stream in (False, True):
                await call(app, "/v1/chat/completions", {**chat, "stream": stream}, key)
                await call(app, "/v1/messages", {**anthropic, "stream": stream}, key)
                await call(app, "/v1/responses", {**responses, "stream": stream}, key)

        for _ in range(3):  # warm: caches filled, lazy imports done
            await round_()
        gc.collect()
        gc.disable()
        try:
            for _ in range(REQUESTS // 6 + 1):
                await round_()
            return gc.collect()
        finally:
            gc.enable()

    unreachable = asyncio.run(scenario())
    # A few are the event loop's own (a finished task's traceback, a cancelled timer); a cycle per
    # request would be thousands.
    assert unreachable < REQUESTS, f"{unreachable} objects were left for the garbage collector"
