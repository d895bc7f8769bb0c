"""The pages beside the API: the chat fast path with `[server] web` off and on (two gateways on one mock
upstream, wrk taking turns; each column its median run), then what serving the pages themselves costs.
Target: web on >= 0.95x the RPS of off (the pages' routes are not on the generation routes' path).

Run: .venv/bin/python -m bench.web [--seconds 5] [--rounds 3]   (needs wrk)
"""

from __future__ import annotations

from pathlib import Path

import httpx

from bench.setting import compare
from bench.wrk import run_wrk
from kimi_gateway.testing import GatewayProcess

PAGES = ("/chat", "/static/web/chat.js", "/static/vendor/marked/marked.esm.js")


def pages(gateways: dict[str, GatewayProcess], workdir: Path, seconds: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("page (web on)", "c", "RPS", "p50 ms", "bytes", "gzipped")]
    for path in PAGES:
        url = gateways["on"].base_url + path
        plain = httpx.get(url, headers={"Accept-Encoding": "identity"})
        zipped = httpx.get(url, headers={"Accept-Encoding": "gzip"})
        assert plain.status_code == 200, path
        run = run_wrk(url, None, 8, seconds, workdir, headers={"Accept-Encoding": "gzip"})
        sent = str(zipped.num_bytes_downloaded)  # as it crossed the wire, before decoding
        rows.append((path, "8", f"{run['rps']:.0f}", f"{run['p50']:.2f}", str(len(plain.content)), sent))
    return rows


if __name__ == "__main__":
    compare("web", "web = false", "web = true", pages)
