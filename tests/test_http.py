"""HTTP details real clients depend on: CORS for browser apps, 405 and HEAD, gzip both ways, surrogates."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kimi_gateway.testing import LOCAL_MODEL, GatewayProcess
from tests import images

APP = "https://app.example"
HI = {"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def cors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path_factory.mktemp("cors"), f'[server]\ncors_origins = ["{APP}"]\n')
    yield gw
    gw.stop()


def test_preflight_and_cross_origin_calls(cors: GatewayProcess) -> None:
    for path in ("/v1/chat/completions", "/v1/models", "/api/v1/keys"):
        preflight = httpx.options(
            cors.base_url + path,
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, x-title, anthropic-version",
            },
        )
        assert preflight.status_code == 200, (path, preflight.text)
        assert preflight.headers["access-control-allow-origin"] == APP
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert {"authorization", "content-type", "x-title", "anthropic-version"} <= set(allowed.split(", "))
        assert "access-control-allow-credentials" not in preflight.headers
    answer = httpx.post(cors.api + "/chat/completions", json=HI, headers={"Origin": APP}, timeout=60)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == APP
    assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()

    other = httpx.options(
        cors.base_url + "/v1/chat/completions",
        headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"},
    )
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers


def test_cors_is_off_by_default(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path)
    try:
        answer = httpx.post(gw.api + "/chat/completions", json=HI, headers={"Origin": APP}, timeout=60)
        assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers
    finally:
        gw.stop()


def test_405_lists_every_allowed_method_and_head_works(gateway: GatewayProcess) -> None:
    wrong = httpx.get(gateway.api + "/chat/completions")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    files = httpx.put(gateway.api + "/files")
    assert files.status_code == 405 and files.headers["allow"] == "GET, HEAD, POST"
    head = httpx.head(gateway.api + "/models")
    got = httpx.get(gateway.api + "/models")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]


def test_gzip_request_bodies_are_accepted_and_capped(gateway: GatewayProcess) -> None:
    body = gzip.compress(json.dumps(HI).encode())
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    answer = httpx.post(gateway.api + "/chat/completions", content=body, headers=headers, timeout=60)
    assert answer.status_code == 200, answer.text
    count = httpx.post(gateway.api + "/tokenizers/estimate-token-count", content=body, headers=headers)
    assert count.status_code == 200 and count.json()["data"]["total_tokens"] > 0
    # 100 MB of zeros in about 100 KB: refused once the inflated size passes the 20 MB body limit.
    bomb = gzip.compress(b'{"model": "' + b"0" * 100_000_000 + b'"}', compresslevel=9)
    refused = httpx.post(gateway.api + "/chat/completions", content=bomb, headers=headers, timeout=60)
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "request_too_large"
    broken = httpx.post(gateway.api + "/chat/completions", content=b"not gzip", headers=headers)
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_encoding"
    other = httpx.post(gateway.api + "/chat/completions", content=b"{}", headers={"Content-Encoding": "br"})
    assert other.status_code == 415


def test_large_responses_are_gzipped_for_clients_that_accept_it(gateway: GatewayProcess) -> None:
    plain = httpx.get(gateway.api + "/models", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and len(plain.content) >= 4096
    packed = httpx.get(gateway.api + "/models", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip" and packed.json() == plain.json()


def test_a_lone_surrogate_gets_a_400_that_says_so(gateway: GatewayProcess) -> None:
    body = (
        b'{"model": "%s", "messages": [{"role": "user", "content": "cut \\ud83d here"}]}'
        % LOCAL_MODEL.encode()
    )
    answer = httpx.post(
        gateway.api + "/chat/completions", content=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_json" and "surrogate" in error["message"]


def test_token_counts_accept_what_chat_accepts(gateway: GatewayProcess) -> None:
    url = gateway.api + "/tokenizers/estimate-token-count"
    text = {"type": "text", "text": "What is the total on this receipt?"}
    plain = httpx.post(url, json={"model": LOCAL_MODEL, "messages": [{"role": "user", "content": [text]}]})
    assert plain.status_code == 200 and plain.headers["x-token-count-method"] == "tokenizer"
    image = images.image_part(images.data_url(images.encoded(images.receipt())))
    both = httpx.post(
        url, json={"model": LOCAL_MODEL, "messages": [{"role": "user", "content": [text, image]}]}
    )
    assert both.status_code == 200, both.text
    assert both.headers["x-token-count-method"] == "tokenizer+media-estimate"
    assert both.json()["data"]["total_tokens"] == plain.json()["data"]["total_tokens"] + 1024


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/v1/chat/completions", "application/json"), ("/v1/files", "multipart/form-data; boundary=b0")],
)
def test_a_body_sent_a_byte_a_second_gets_408(gateway: GatewayProcess, path: str, kind: str) -> None:
    """A client trickling its body held the connection for as long as it liked (40 s and more); now it
    must keep up 16 KB/s after a 10 s grace, or gets 408 and the connection back."""
    import socket
    import time

    body = json.dumps({"model": LOCAL_MODEL, "messages": [{"role": "user", "content": "x" * 200}]}).encode()
    if path == "/v1/files":
        body = b'--b0\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n' + body
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=40) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body[:10])
        started = time.monotonic()
        answer = b""
        for byte in body[10:]:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(1.0)
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                continue
            if answer:
                break
        elapsed = time.monotonic() - started
        sock.settimeout(2.0)
        while answer and b"request_timeout" not in answer:  # the body may follow the head separately
            more = sock.recv(65536)
            if not more:
                break
            answer += more
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert elapsed < 30, elapsed
    assert b"request_timeout" in answer
    assert httpx.get(gateway.base_url + "/health").status_code == 200
