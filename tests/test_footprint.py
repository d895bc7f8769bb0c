"""The gateway's own memory: after start-up, and after 1,000 proxied requests, its resident set stays
under a ceiling and does not keep growing (a leak shows as growth). The embedded model is left out here:
its weights and KV cache are the model's, not the gateway's (bench.gateway_overhead reports them)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from kimi_gateway.testing import GatewayProcess
from tests.fakes.upstream import FakeUpstream
from tests.upstreams import KEY, KEY_ENV, MODEL, gateway_config

NO_LOCAL_MODEL = '[models."smollm2-135m-instruct"]\nlocal = { gguf = "/nonexistent/left-out.gguf" }\n'
CEILING_MB = 250  # generous: the process imports FastAPI, SQLAlchemy, pydantic, PIL, av, onnxruntime...
GROWTH_MB = 40


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _requests(gw: GatewayProcess, count: int) -> None:
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        semaphore = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with semaphore:
                body = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"Request {i}: " + "words " * 50}],
                    "stream": i % 2 == 0,
                    "provider": {"only": ["moon", "orouter"]},
                }
                response = await client.post(gw.api + "/chat/completions", json=body)
                assert response.status_code == 200

        await asyncio.gather(*(one(i) for i in range(count)))


def test_rss_after_start_and_after_a_thousand_requests(
    tmp_path: Path, fake_servers: dict[str, FakeUpstream]
) -> None:
    gw = GatewayProcess(tmp_path, NO_LOCAL_MODEL + gateway_config(fake_servers), env={KEY_ENV: KEY})
    try:
        started = _rss_mb(gw.proc.pid)
        assert started < CEILING_MB, started
        asyncio.run(_requests(gw, 200))  # caches, pools and buffers reach their working size
        warm = _rss_mb(gw.proc.pid)
        asyncio.run(_requests(gw, 1000))
        after = _rss_mb(gw.proc.pid)
        assert after < CEILING_MB, (started, warm, after)
        assert after - warm < GROWTH_MB, (started, warm, after)
    finally:
        gw.stop()
