"""The pages beside the API: the chat fast path with `[server] web` off and on (two gateways on one mock
upstream, wrk taking turns; each column its median run), then what serving the pages themselves costs.
Target: web on >= 0.95x the RPS of off (the pages' routes are not on the generation routes' path).

Run: .venv/bin/python -m bench.web [--seconds 5] [--rounds 3]   (needs wrk)
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
from bench.wrk import MODEL, add_cpu_option, mock_config, pin, run_wrk, take_turns
from kimi_gateway.testing import GatewayProcess, free_port

PAGES = ("/chat", "/static/web/chat.js", "/static/vendor/marked/marked.esm.js")


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
        ("mode", "c", "web off RPS", "web on RPS", "on/off", "off p50 ms", "on p50 ms")
    ]
    pages: list[tuple[str, ...]] = [("page (web on)", "c", "RPS", "p50 ms", "bytes", "gzipped")]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            time.sleep(0.5)
            for name, server in (("off", "web = false"), ("on", "web = true")):
                folder = workdir / name
                folder.mkdir()
                gateways[name] = GatewayProcess(folder, mock_config(port, NO_LOCAL_MODEL, server))
                assert httpx.post(gateways[name].api + "/chat/completions", json=body).status_code == 200
            urls = {name: gateway.api + "/chat/completions" for name, gateway in gateways.items()}
            rows += take_turns(urls, body, args.seconds, args.rounds, workdir)
            for path in PAGES:
                url = gateways["on"].base_url + path
                plain = httpx.get(url, headers={"Accept-Encoding": "identity"})
                zipped = httpx.get(url, headers={"Accept-Encoding": "gzip"})
                assert plain.status_code == 200, path
                run = run_wrk(url, None, 8, args.seconds, workdir, headers={"Accept-Encoding": "gzip"})
                sent = str(zipped.num_bytes_downloaded)  # as it crossed the wire, before decoding
                pages.append(
                    (path, "8", f"{run['rps']:.0f}", f"{run['p50']:.2f}", str(len(plain.content)), sent)
                )
    finally:
        for gateway in gateways.values():
            gateway.stop()
        mock.terminate()
    print_table(rows)
    print()
    print_table(pages)
    print(placement)
    print("target: web on >= 0.95x the RPS of off")


if __name__ == "__main__":
    main()
