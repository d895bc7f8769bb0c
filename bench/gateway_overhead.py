"""The gateway's own cost in front of a fast upstream: direct-to-mock against through-gateway, same run.

Load comes from wrk (Debian package `wrk`) in its own process. For each of non-streaming and streaming
(20-chunk) responses, at concurrency 1 and 32: RPS, p50 and p99 latency, the p50 the gateway adds, and the
gateway's resident memory. A second reference, `bench.floor`, is a bare pass-through on the gateway's own
server and upstream client: the gap between it and the gateway is the gateway's own logic, and its own
figures show how fast the machine is that day (the targets are absolute; the machines are not). The three
take turns `--rounds` times per cell and each shows its median run, since these VMs drift by tens of
percent within minutes.
Targets (one worker): added p50 <= 0.5 ms at c=1; >= 2,000 RPS non-streaming at c=32.

Run: .venv/bin/python -m bench.gateway_overhead [--seconds 5] [--rounds 3] [--cpus 0 | all]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import accounting, mock_upstream
from bench.table import print_table
from bench.wrk import MODEL, add_cpu_option, median_run, mock_config, pin, require_wrk, run_wrk
from kimi_gateway.testing import GatewayProcess, free_port


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="turns per cell; each column shows its median")
    parser.add_argument("--no-accounting", action="store_true", help="skip the accounting on/off table")
    add_cpu_option(parser)
    args = parser.parse_args()
    require_wrk()
    placement = pin(args.cpus)

    port = free_port()
    mock = mock_upstream.spawn(port)
    floor_port = free_port()
    floor = subprocess.Popen([sys.executable, "-m", "bench.floor", str(port), str(floor_port)])
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = mock_config(port)
        time.sleep(0.5)
        gateway = GatewayProcess(workdir, config)
        try:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
            direct_url = f"http://127.0.0.1:{port}/v1/chat/completions"
            floor_url = f"http://127.0.0.1:{floor_port}/v1/chat/completions"
            gateway_url = gateway.api + "/chat/completions"
            for url in (direct_url, floor_url, gateway_url):  # warm-up, and a check that all answer
                assert httpx.post(url, json=body).status_code == 200
            rows = []
            urls = (direct_url, floor_url, gateway_url)
            for stream in (False, True):
                for connections in (1, 32):
                    request = {**body, "stream": stream}
                    runs: list[list[dict[str, float]]] = [[], [], []]
                    for turn in range(args.rounds):
                        # Taking turns, in a rotating order: the machine's drift falls on all three alike.
                        for i in (turn % 3, (turn + 1) % 3, (turn + 2) % 3):
                            runs[i].append(run_wrk(urls[i], request, connections, args.seconds, workdir))
                    direct, bare, through = (median_run(r) for r in runs)
                    rows.append((stream, connections, direct, bare, through))
            memory = rss_mb(gateway.proc.pid)
            gateway.stop()
            accounting_rows = [] if args.no_accounting else accounting.measure(port, args.seconds, workdir)
        finally:
            if gateway.proc.poll() is None:
                gateway.stop()
            floor.terminate()
            mock.terminate()

    header = (
        "mode",
        "c",
        "direct RPS",
        "floor RPS",
        "gateway RPS",
        "gateway/floor RPS",
        "direct p50/p99 ms",
        "floor p50/p99 ms",
        "gateway p50/p99 ms",
        "floor added p50 ms",
        "added p50 ms",
        "errors",
    )
    table = [header]
    for stream, connections, direct, bare, through in rows:
        table.append(
            (
                "stream (20 chunks)" if stream else "non-stream",
                str(connections),
                f"{direct['rps']:.0f}",
                f"{bare['rps']:.0f}",
                f"{through['rps']:.0f}",
                f"{through['rps'] / bare['rps']:.2f}",
                f"{direct['p50']:.2f} / {direct['p99']:.2f}",
                f"{bare['p50']:.2f} / {bare['p99']:.2f}",
                f"{through['p50']:.2f} / {through['p99']:.2f}",
                f"{bare['p50'] - direct['p50']:.2f}",
                f"{through['p50'] - direct['p50']:.2f}",
                f"{direct['errors']:.0f}/{bare['errors']:.0f}/{through['errors']:.0f}",
            )
        )
    print_table(table)
    print(placement)
    # The gateway process alone: the embedded model runs in its own, started on demand.
    print(f"gateway RSS after the run: {memory:.0f} MB (the gateway process alone)")
    print("targets: added p50 <= 0.5 ms at c=1; >= 2000 RPS non-stream at c=32")
    if accounting_rows:
        print()
        accounting.print_report(accounting_rows)


if __name__ == "__main__":
    main()
