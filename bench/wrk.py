"""Load from wrk (Debian package `wrk`) in its own process: a POST with a JSON body, parsed into numbers."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

MODEL = "kimi-k2-thinking"
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%s]]
"""


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    url: str,
    body: dict[str, object] | None,
    connections: int,
    seconds: int,
    workdir: Path,
    headers: dict[str, str] | None = None,
) -> dict[str, float]:
    """`body` None: GET the URL."""
    script = workdir / f"body-{connections}-{body.get('stream') if body else 'get'}.lua"
    extra = "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in (headers or {}).items())
    script.write_text((LUA % json.dumps(body) if body is not None else "") + extra)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out)
        assert m is not None, out
        result[f"p{pct}"] = _ms(m.group(1), m.group(2))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    return result


def mock_config(upstream_port: int, extra: str = "", server: str = "") -> str:
    """A gateway config with one provider: the mock upstream on `upstream_port`, serving MODEL. `server`:
    more lines of the [server] table."""
    return f"""{extra}
[server]
log_level = "warning"
{server}
[providers.mock]
style = "openai"
base_url = "http://127.0.0.1:{upstream_port}/v1"
[providers.mock.models."{MODEL}"]
pricing = {{ input = 0.60, cached_input = 0.15, output = 3.00 }}
"""


def add_cpu_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cpus",
        default="0",
        help="CPUs for every process of the run: wrk, mock, gateway (default: 0; 'all' to leave them free)",
    )


def pin(cpus: str) -> str:
    """Run this process and every process it starts on `cpus`; returns how the table should say it.

    On a small VM a wake-up across CPUs costs tens of microseconds, and a proxied request makes four of them
    where a direct one makes two: left free, the scheduler's placement shows up as gateway latency.
    """
    if cpus == "all" or not hasattr(os, "sched_setaffinity"):
        return "processes free to run on any CPU"
    chosen = {int(c) for c in cpus.split(",")}
    os.sched_setaffinity(0, chosen)
    return f"wrk, mock upstream and gateway all pinned to CPU {cpus}"


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median RPS, whole (its latencies stay its own)."""
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def take_turns(
    urls: dict[str, str], body: dict[str, object], seconds: int, rounds: int, workdir: Path
) -> list[tuple[str, ...]]:
    """Two gateways that differ in one setting (`urls`: {"off": ..., "on": ...}), wrk taking turns between
    them so that the machine's drift falls on both; each column is the median of `rounds` runs. Rows:
    mode, connections, off RPS, on RPS, on/off, off p50 ms, on p50 ms."""
    off_name, on_name = urls
    rows: list[tuple[str, ...]] = []
    for stream in (False, True):
        for connections in (1, 32):
            request = {**body, "stream": stream}
            runs: dict[str, list[dict[str, float]]] = {off_name: [], on_name: []}
            for turn in range(rounds):
                for name in (off_name, on_name) if turn % 2 == 0 else (on_name, off_name):
                    runs[name].append(run_wrk(urls[name], request, connections, seconds, workdir))
            off, on = (
                sorted(runs[n], key=lambda r: r["rps"])[len(runs[n]) // 2] for n in (off_name, on_name)
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
    return rows
