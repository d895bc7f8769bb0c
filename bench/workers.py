"""One worker against two on this machine: `serve --workers 1` and `--workers 2`, non-streaming, c=64, the
same mock upstream, taking turns (`--rounds`, each column its median run). Target: 2 workers >= 1.6x one,
while wrk and the mock share the machine's cores with them.

The embedded model is left out (each worker would load its own copy): the figure is the gateway's.

Run: .venv/bin/python -m bench.workers [--seconds 5] [--rounds 3]   (needs wrk)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import httpx

from bench import mock_upstream
from bench.instructions import NO_LOCAL_MODEL
from bench.table import print_table
from bench.wrk import MODEL, mock_config, require_wrk, run_wrk
from kimi_gateway.testing import GatewayProcess, free_port

CONNECTIONS = 64


def _children(pid: int) -> int:
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        count += int(fields[1]) == pid  # the parent pid
    return count


def _started(gateway: GatewayProcess, workers: int, timeout: float = 60.0) -> None:
    """Ready means one worker answers; with several, wait for every worker process, then for their
    start-up (the model is left out, so it takes a few seconds)."""
    if workers == 1:
        return
    deadline = time.monotonic() + timeout
    while _children(gateway.proc.pid) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every one of {workers} workers started")
        time.sleep(0.2)
    time.sleep(5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    require_wrk()
    port = free_port()
    mock = mock_upstream.spawn(port)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    gateways: dict[int, GatewayProcess] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            time.sleep(0.5)
            for workers in (1, 2):
                folder = workdir / f"w{workers}"
                folder.mkdir()
                gateway = GatewayProcess(
                    folder, mock_config(port, NO_LOCAL_MODEL), args=["--workers", str(workers)]
                )
                gateways[workers] = gateway
                _started(gateway, workers)
                for _ in range(workers * 4):  # a warm-up request or two for each worker
                    assert (
                        httpx.post(gateway.api + "/chat/completions", json=body, timeout=30).status_code
                        == 200
                    )
            for turn in range(args.rounds):
                for workers in (1, 2) if turn % 2 == 0 else (2, 1):  # taking turns: drift falls on both
                    url = gateways[workers].api + "/chat/completions"
                    runs[workers].append(run_wrk(url, body, CONNECTIONS, args.seconds, workdir))
    finally:
        for gateway in gateways.values():
            gateway.stop()
        mock.terminate()
    median = {w: sorted(r, key=lambda x: x["rps"])[len(r) // 2] for w, r in runs.items()}
    rows = [("workers", "RPS (median run)", "p50 / p99 ms", "errors", "ratio vs 1")]
    for workers in (1, 2):
        m = median[workers]
        rows.append(
            (
                str(workers),
                f"{m['rps']:.0f}",
                f"{m['p50']:.2f} / {m['p99']:.2f}",
                f"{m['errors']:.0f}",
                f"{m['rps'] / median[1]['rps']:.2f}",
            )
        )
    print_table(rows)
    print(
        f"non-stream, c={CONNECTIONS}, {args.seconds} s x {args.rounds} rounds; {os.cpu_count()} CPUs shared"
    )
    print("target: 2 workers >= 1.6x one worker")


if __name__ == "__main__":
    main()
