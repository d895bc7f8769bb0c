"""The chat fast path with Prometheus metrics on and off: two gateways on one mock upstream, wrk taking
turns between them (`--rounds`, each column its median run). Target: on >= 0.95x the RPS of off.

Run: .venv/bin/python -m bench.metrics [--seconds 5] [--rounds 3]   (needs wrk)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.instructions import NO_LOCAL_MODEL
from bench.table import print_table
from bench.wrk import MODEL, add_cpu_option, mock_config, pin, run_wrk
from kimi_gateway.testing import GatewayProcess, free_port


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    add_cpu_option(parser)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    placement = pin(args.cpus)
    port = free_port()
    mock = subprocess.Popen([sys.executable, "-m", "bench.mock_upstream", str(port)])
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
    gateways: dict[str, GatewayProcess] = {}
    rows = [("mode", "c", "metrics off RPS", "metrics on RPS", "on/off", "off p50 ms", "on p50 ms")]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            time.sleep(0.5)
            for name, server in (("off", "metrics = false"), ("on", "metrics = true")):
                folder = workdir / name
                folder.mkdir()
                gateways[name] = GatewayProcess(folder, mock_config(port, NO_LOCAL_MODEL, server))
                assert httpx.post(gateways[name].api + "/chat/completions", json=body).status_code == 200
            for stream in (False, True):
                for connections in (1, 32):
                    request = {**body, "stream": stream}
                    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
                    for turn in range(args.rounds):
                        for name in ("off", "on") if turn % 2 == 0 else ("on", "off"):
                            url = gateways[name].api + "/chat/completions"
                            runs[name].append(run_wrk(url, request, connections, args.seconds, workdir))
                    off, on = (
                        sorted(runs[n], key=lambda r: r["rps"])[len(runs[n]) // 2] for n in ("off", "on")
                    )
                    rows.append(
                        (
                            "stream (20 chunks)" if stream else "non-stream",
                            str(connections),
                            f"{off['rps']:.0f}",
                            f"{on['rps']:.0f}",
                            f"{on['rps'] / off['rps']:.2f}",
                            f"{off['p50']:.2f}",
                            f"{on['p50']:.2f}",
                        )
                    )
    finally:
        for gateway in gateways.values():
            gateway.stop()
        mock.terminate()
    print_table(rows)
    print(placement)
    print("target: metrics on >= 0.95x the RPS of off")


if __name__ == "__main__":
    main()
