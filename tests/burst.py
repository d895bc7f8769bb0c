"""Hundreds of requests at once, sent from a process of their own.

The fake upstreams run on threads of the test process. A burst of hundreds of requests keeps its client's
event loop busy, and in the same process it would hold the GIL against them: each turn of a fake's loop
waits up to the 5 ms switch interval, the fakes fall seconds behind, and their answers time out at the
gateway (504 "no response within 5s"). The load then measured the test process, not the gateway.

Run: python -m tests.burst < spec.json   (what `burst` does)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Reply:
    status_code: int
    headers: dict[str, str]
    text: str
    port: int  # which gateway answered

    def json(self) -> Any:
        return json.loads(self.text)


def burst(targets: list[tuple[str, str]], count: int, body: dict[str, Any]) -> list[Reply]:
    """`count` POSTs of `body` at once, the i-th to `targets[i % len(targets)]` (URL, API key)."""
    spec = json.dumps({"targets": targets, "count": count, "body": body})
    run = subprocess.run(
        [sys.executable, "-m", "tests.burst"],
        input=spec,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return [Reply(**reply) for reply in json.loads(run.stdout)]


async def _send(spec: dict[str, Any]) -> list[dict[str, Any]]:
    count = spec["count"]
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(i: int) -> dict[str, Any]:
            url, key = spec["targets"][i % len(spec["targets"])]
            response = await client.post(url, json=spec["body"], headers={"Authorization": f"Bearer {key}"})
            return {
                "status_code": response.status_code,
                "headers": dict(response.headers),
                "text": response.text,
                "port": response.url.port,
            }

        return await asyncio.gather(*(one(i) for i in range(count)))


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_send(json.loads(sys.stdin.read())))))
