"""One `[server]` setting off and on: two gateways on one mock upstream, wrk taking turns between them on
the chat route (bench.wrk.take_turns). bench.metrics and bench.web are this with their own setting."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from bench import mock_upstream
from bench.instructions import NO_LOCAL_MODEL
from bench.table import print_table
from bench.wrk import MODEL, add_cpu_option, mock_config, pin, require_wrk, take_turns
from kimi_gateway.testing import GatewayProcess, free_port

# What a bench may add after the chat rows: given the two gateways ("off", "on"), its workdir, the seconds
# per run, its own table.
Extra = Callable[[dict[str, GatewayProcess], Path, int], list[tuple[str, ...]]]


def compare(name: str, off: str, on: str, extra: Extra | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    add_cpu_option(parser)
    args = parser.parse_args()
    require_wrk()
    placement = pin(args.cpus)
    port = free_port()
    mock = mock_upstream.spawn(port)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
    gateways: dict[str, GatewayProcess] = {}
    rows: list[tuple[str, ...]] = [
        ("mode", "c", f"{name} off RPS", f"{name} on RPS", "on/off", "off p50 ms", "on p50 ms")
    ]
    more: list[tuple[str, ...]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            time.sleep(0.5)
            for label, server in (("off", off), ("on", on)):
                folder = workdir / label
                folder.mkdir()
                gateways[label] = GatewayProcess(folder, mock_config(port, NO_LOCAL_MODEL, server))
                assert httpx.post(gateways[label].api + "/chat/completions", json=body).status_code == 200
            urls = {label: gateway.api + "/chat/completions" for label, gateway in gateways.items()}
            rows += take_turns(urls, body, args.seconds, args.rounds, workdir)
            if extra is not None:
                more = extra(gateways, workdir, args.seconds)
    finally:
        for gateway in gateways.values():
            gateway.stop()
        mock.terminate()
    print_table(rows)
    if more:
        print()
        print_table(more)
    print(placement)
    print(f"target: {name} on >= 0.95x the RPS of off")
