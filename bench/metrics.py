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
from bench.wrk import MODEL, add_cpu_option, mock_config, pin, take_turns
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
    rows: list[tuple[str, ...]] = [
        ("mode", "c", "metrics off RPS", "metrics on RPS", "on/off", "off p50 ms", "on p50 ms")
    ]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            time.sleep(0.5)
            for name, server in (("off", "metrics = false"), ("on", "metrics = true")):
                folder = workdir / name
                folder.mkdir()
                gateways[name] = GatewayProcess(folder, mock_config(port, NO_LOCAL_MODEL, server))
                assert httpx.post(gateways[name].api + "/chat/completions", json=body).status_code == 200
            urls = {name: gateway.api + "/chat/completions" for name, gateway in gateways.items()}
            rows += take_turns(urls, body, args.seconds, args.rounds, workdir)
    finally:
        for gateway in gateways.values():
            gateway.stop()
        mock.terminate()
    print_table(rows)
    print(placement)
    print("target: metrics on >= 0.95x the RPS of off")


if __name__ == "__main__":
    main()
