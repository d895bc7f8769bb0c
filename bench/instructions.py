"""Instructions per request, counted by valgrind's callgrind: the floor against the gateway, same run.

Timings on the small shared VMs these benchmarks run on drift by tens of percent within minutes, and
`perf` has no hardware counters there. An instruction count does not drift: the same code, inputs and
environment give the same total within about 1%, whatever else the machine is doing. So this is the
measure for comparing two versions of the hot path; `bench.gateway_overhead` stays the measure of what a
client sees.

Each app runs in its own process under callgrind, driven in-process through ASGI (no HTTP server, so both
columns leave uvicorn out) against the mock upstream over loopback. Instrumentation is switched on only
around the measured block, after a warm-up. Instructions are not time: a cache miss costs no more of them
than a hit, so this understates code that touches much memory. The embedded model is left out of the
gateway's config, as loading it under valgrind takes minutes; no request of this benchmark goes to it.

Run: .venv/bin/python -m bench.instructions [--requests 300]   (needs valgrind)
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import mock_upstream
from bench.accounting_cpu import CHAT, call, start
from bench.table import print_table
from bench.wrk import mock_config
from kimi_gateway.testing import free_port

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
PATH = "/v1/chat/completions"
NO_LOCAL_MODEL = '[models."smollm2-135m-instruct"]\nlocal = { gguf = "/nonexistent/left-out.gguf" }\n'
# Background writers (uptime buckets, accounting batches) run on the clock; under valgrind a request takes
# some 50 times as long, so each second's flush would be shared by 50 times fewer requests than in real
# use and swamp the request path's count. Every 30 s, they stay out of it.
QUIET_BACKGROUND = "[accounts]\nflush_seconds = 30\n"


async def _child(which: str, stream: bool, upstream_port: int, config: str, requests: int) -> None:
    app: App
    if which == "floor":
        from bench.floor import Floor

        app = Floor(upstream_port)
    else:
        from kimi_gateway.config import load_config
        from kimi_gateway.http.app import create_app

        app = create_app(load_config(config))
    await start(app)
    payload = {**CHAT, "stream": stream}
    for _ in range(200):
        await call(app, PATH, payload)
    print("READY", flush=True)
    sys.stdin.readline()
    for _ in range(requests):
        await call(app, PATH, payload)
    print("DONE", flush=True)
    sys.stdin.readline()


def count(which: str, stream: bool, upstream_port: int, config: Path, requests: int, workdir: Path) -> float:
    """Instructions per request of one app, in a child process under callgrind."""
    out = workdir / f"callgrind.{which}.{int(stream)}"
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        "-m",
        "bench.instructions",
        "--child",
        which,
        "--stream" if stream else "--no-stream",
        "--upstream-port",
        str(upstream_port),
        "--config",
        str(config),
        "--requests",
        str(requests),
    ]
    child = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert child.stdin is not None and child.stdout is not None
    for line in child.stdout:
        if line.startswith(("READY", "DONE")):
            switch = "on" if line.startswith("READY") else "off"
            control = ["callgrind_control", "-i", switch, str(child.pid)]
            subprocess.run(control, capture_output=True, check=True)
            child.stdin.write("\n")
            child.stdin.flush()
    if child.wait() != 0:
        raise RuntimeError(f"{which} exited with {child.returncode}")
    total = 0
    for path in glob.glob(f"{out}*"):
        for line in Path(path).read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    if not total:
        raise RuntimeError(f"callgrind counted nothing for {which}")
    return total / requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--child", choices=("floor", "gateway"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--stream", action=argparse.BooleanOptionalAction, default=False, help=argparse.SUPPRESS
    )
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import uvloop

        uvloop.run(_child(args.child, args.stream, args.upstream_port, args.config, args.requests))
        return
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is needed: apt-get install valgrind")

    port = free_port()
    mock = mock_upstream.spawn(port)
    rows = [
        (
            "mode",
            "floor instr/req",
            "gateway instr/req",
            "gateway/floor",
            "gateway's own instr/req",
            "own, metrics off",
            "metrics' share",
        )
    ]
    try:
        time.sleep(0.5)
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            config = workdir / "gateway.toml"
            setup = NO_LOCAL_MODEL + QUIET_BACKGROUND
            config.write_text(f'data_dir = "{workdir / "data"}"\n' + mock_config(port, setup))
            # The same gateway without /metrics' counting (`[server] metrics = false`).
            quiet = workdir / "quiet.toml"
            quiet.write_text(
                f'data_dir = "{workdir / "quiet"}"\n' + mock_config(port, setup, "metrics = false")
            )
            for stream in (False, True):
                floor = count("floor", stream, port, config, args.requests, workdir)
                gateway = count("gateway", stream, port, config, args.requests, workdir)
                off = count("gateway", stream, port, quiet, args.requests, workdir)
                rows.append(
                    (
                        "stream (20 chunks)" if stream else "non-stream",
                        f"{floor / 1000:,.0f}k",
                        f"{gateway / 1000:,.0f}k",
                        f"{gateway / floor:.2f}",
                        f"{(gateway - floor) / 1000:,.0f}k",
                        f"{(off - floor) / 1000:,.0f}k",
                        f"{(gateway - off) / gateway:.1%}",
                    )
                )
    finally:
        mock.terminate()
    print_table(rows)
    print(f"{args.requests} requests per cell, after 200 of warm-up; in-process ASGI, no HTTP server")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the same hashing in every run: steadier counts
    main()
