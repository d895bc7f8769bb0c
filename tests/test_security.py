"""Adversarial inputs against a running gateway: each reproduces a finding, with bounded requests on
loopback, and checks that the gateway refuses it without harm to anyone else."""

from __future__ import annotations

import asyncio
import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kimi_gateway.media.fetch import Fetcher, FetchLimits, Refused
from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess
from tests import images


class _Counting(http.server.ThreadingHTTPServer):
    daemon_threads = True
    hits: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Counting

    def log_message(self, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        body = images.encoded(images.receipt())
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def internal() -> Iterator[_Counting]:
    """A server on loopback standing for an internal host: it must never see a request."""
    server = _Counting(("127.0.0.1", 0), _Handler)
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def _spellings(port: int) -> list[str]:
    """127.0.0.1 and localhost as a URL parser that folds Unicode (IDNA/UTS-46) reads them, and more."""
    return [
        f"http://\uff11\uff12\uff17.\uff10.\uff10.\uff11:{port}/full-width",  # full-width digits
        f"http://127\u30020\u30020\u30021:{port}/ideographic-stops",
        f"http://\u2460\u2461\u2466.\u24ea.\u24ea.\u2460:{port}/circled",  # circled digits
        f"http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:{port}/full-width-name",
        f"http://loc\uff41lhost:{port}/mixed-script",
        f"http://LOCALHOST.:{port}/trailing-dot",
        f"http://[::ffff:7f00:1]:{port}/mapped",
        f"http://0x7f.1:{port}/hex",
        f"http://xn--lcalhost-x0a:{port}/punycode",
        "http://\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11\uff16\uff19.\uff12\uff15\uff14/latest/meta-data/",
        f"http://127.0.0.1\\@example.com:{port}/backslash",
    ]


def _chat(gw: GatewayProcess, part: dict[str, Any]) -> httpx.Response:
    body = {
        "model": LOCAL_MODEL,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Read it."}, part]}],
        "max_tokens": 4,
    }
    return httpx.post(gw.api + "/chat/completions", json=body, timeout=60)


def test_unicode_and_other_spellings_of_internal_hosts_are_refused(
    gateway: GatewayProcess, internal: _Counting
) -> None:
    port = internal.server_address[1]
    messages = set()
    for url in _spellings(port):
        for part in (images.image_part(url), {"type": "video_url", "video_url": {"url": url}}):
            response = _chat(gateway, part)
            assert response.status_code == 400, (url, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_image_url", (url, error)
            messages.add(error["message"])
    assert internal.hits == []
    # One message whatever the reason (a name that does not resolve, an internal address, a bad URL): the
    # API tells an attacker nothing about which internal hosts exist.
    assert len(messages) == 1, messages


def test_redirects_to_unicode_spellings_are_refused(tmp_path: Path, internal: _Counting) -> None:
    """A trusted image host (allow-listed) redirects to an internal host spelled in Unicode."""
    trusted = _Counting(("127.0.0.2", 0), _Redirecting)
    trusted.hits = []
    thread = threading.Thread(target=trusted.serve_forever, daemon=True)
    thread.start()
    gw = GatewayProcess(tmp_path, '[media]\nallow_hosts = ["127.0.0.2"]\n')
    try:
        port = internal.server_address[1]
        for url in _spellings(port)[:6]:
            for how in ("", "&quoted"):
                quoted = urllib.parse.quote(url, safe="")
                target = f"http://127.0.0.2:{trusted.server_address[1]}/?to={quoted}{how}"
                response = _chat(gw, images.image_part(target))
                assert response.status_code == 400, (url, how, response.text)
        assert len(trusted.hits) == 12  # the allowed host was asked ...
        assert internal.hits == []  # ... and the internal one never
    finally:
        gw.stop()
        trusted.shutdown()


class _Redirecting(http.server.BaseHTTPRequestHandler):
    server: _Counting

    def log_message(self, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        """Redirects to the URL after `?to=`: as raw UTF-8 bytes in the header (as a hostile server may
        send), or percent-encoded with `&quoted`."""
        self.server.hits.append(self.path)
        query = self.path.split("?", 1)[1]
        quoted = query.endswith("&quoted")
        target = query.removesuffix("&quoted").removeprefix("to=")
        location = target.encode() if quoted else urllib.parse.unquote(target).encode()
        self.wfile.write(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n")


def test_the_connect_time_check_stands_alone(internal: _Counting) -> None:
    """Even if the pre-connection check missed an address, the socket factory refuses it before any byte
    is sent: two independent checks, each sufficient."""
    fetcher = Fetcher(FetchLimits(10**6, 2.0, 5.0, 3, frozenset()))
    fetcher.check = lambda url: None  # type: ignore[method-assign]  # as if the first check were fooled

    async def attempt() -> str:
        try:
            await fetcher.fetch_url(f"http://127.0.0.1:{internal.server_address[1]}/direct")
        except Refused as why:
            return str(why)
        finally:
            await fetcher.close()
        return "fetched"

    assert asyncio.run(attempt()).startswith("it must be a public")
    assert internal.hits == []
