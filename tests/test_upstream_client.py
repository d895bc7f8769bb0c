"""The upstream HTTP client against real sockets: keep-alive, stale connections, framing, TLS, timeouts.

Each test runs its own little server on 127.0.0.1 that answers with raw bytes, so what goes over the wire
is exactly what the test wrote.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import openai
import pytest
import trustme

from kimi_gateway.providers.client import ConnectTimeout, Target, UpstreamClient
from kimi_gateway.providers.http1 import ConnectionFailed
from kimi_gateway.testing import GatewayProcess
from tests.fakes.upstream import Answer, FakeUpstream
from tests.upstreams import KEY, KEY_ENV, MODEL

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}


class Server:
    """Counts connections and requests; `handler` answers each connection."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/v1/chat/completions"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return body


def _chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
BODY = _chunked(b'data: {"a":1}\n\n', b'data: {"b":2}\n\ndata: [DONE]\n\n')


async def _body(client: UpstreamClient, target: Target, payload: bytes = b"{}") -> bytes:
    response = await client.post(target, payload, connect_timeout=2, idle_timeout=2)
    return b"".join([piece async for piece in response.reads()])


def test_keep_alive_reuses_one_connection() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            while True:
                await server.read_request(reader)
                writer.write(SSE_HEAD + BODY)

        async with Server(handler) as server:
            client = UpstreamClient()
            await client.open()
            target = Target.post(server.url(), {**HEADERS, "Authorization": "Bearer k"})
            for i in range(3):
                assert await _body(client, target, b'{"n":%d}' % i) == (
                    b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'
                )
            await client.close()
        assert server.connections == 1
        assert len(server.requests) == 3
        first = server.requests[0]
        assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in first
        assert b"Authorization: Bearer k\r\n" in first
        assert first.endswith(b"Content-Length: 7\r\n\r\n" + b'{"n":0}')

    asyncio.run(scenario())


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            # Answers once, then closes the connection without saying so (as a keep-alive timeout does).
            await server.read_request(reader)
            writer.write(SSE_HEAD + BODY)
            await writer.drain()

        async with Server(handler) as server:
            client = UpstreamClient()
            await client.open()
            target = Target.post(server.url(), HEADERS)
            await _body(client, target)
            await asyncio.sleep(0.1)  # the close arrives while the connection sits in the pool
            await _body(client, target)
            await client.close()
        assert server.connections == 2
        assert len(server.requests) == 2

    asyncio.run(scenario())


def test_a_request_the_server_dropped_is_not_sent_again() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await server.read_request(reader)
            if n == 1:
                writer.write(SSE_HEAD + BODY)  # the first exchange leaves a pooled connection
                await server.read_request(reader)  # the second request arrives on it and is dropped

        async with Server(handler) as server:
            client = UpstreamClient()
            await client.open()
            target = Target.post(server.url(), HEADERS)
            await _body(client, target)
            with pytest.raises(ConnectionFailed):
                await client.post(target, b"{}", connect_timeout=2, idle_timeout=2)
            await client.close()
        assert server.connections == 1  # a POST the server may have begun is never replayed
        assert len(server.requests) == 2

    asyncio.run(scenario())


def test_connection_close_is_not_pooled_and_a_close_delimited_body_is_read_to_the_end() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            writer.write(b'data: {"a":1}\n\n')
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"data: [DONE]\n\n")
            await writer.drain()

        async with Server(handler) as server:
            client = UpstreamClient()
            await client.open()
            target = Target.post(server.url(), HEADERS)
            assert await _body(client, target) == b'data: {"a":1}\n\ndata: [DONE]\n\n'
            assert await _body(client, target) == b'data: {"a":1}\n\ndata: [DONE]\n\n'
            await client.close()
        assert server.connections == 2

    asyncio.run(scenario())


def test_gzip_bodies_are_decoded_and_chunks_split_anywhere_still_frame() -> None:
    payload = b'data: {"a":1}\n\n' * 50 + b"data: [DONE]\n\n"
    packed = gzip.compress(payload)

    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            await server.read_request(reader)
            wire = (
                b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                + _chunked(packed[:10], packed[10:])
            )
            for i in range(0, len(wire), 7):  # framing and gzip both cut mid-way, across reads
                writer.write(wire[i : i + 7])
                await writer.drain()
                await asyncio.sleep(0)

        async with Server(handler) as server:
            client = UpstreamClient()
            await client.open()
            assert await _body(client, Target.post(server.url(), HEADERS)) == payload
            await client.close()

    asyncio.run(scenario())


def test_status_headers_and_error_body() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
            await server.read_request(reader)
            body = b'{"error":{"message":"slow down"}}'
            writer.write(
                b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )

        async with Server(handler) as server:
            client = UpstreamClient()
            await client.open()
            response = await client.post(Target.post(server.url(), HEADERS), b"{}", 2, 2)
            assert response.status == 429
            assert response.headers["retry-after"] == "7"
            assert await response.read() == b'{"error":{"message":"slow down"}}'
            await client.close()

    asyncio.run(scenario())


def test_the_first_event_deadline_counts_from_sending_and_comments_do_not_stop_it() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await server.read_request(reader)
            if n == 1:
                await asyncio.sleep(5)  # no headers at all
                return
            writer.write(SSE_HEAD)
            for _ in range(12):  # comments every 0.1 s: the idle limit never trips, nothing is an event
                writer.write(b"%x\r\n: PROCESSING\n\n\r\n" % 14)
                await writer.drain()
                await asyncio.sleep(0.1)
            writer.write(b'%x\r\ndata: {"a":1}\n\n\r\n0\r\n\r\n' % 15)
            await writer.drain()

        async with Server(handler) as server:
            client = UpstreamClient()
            await client.open()
            target = Target.post(server.url(), HEADERS)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):  # waiting for the headers
                await client.post(target, b"{}", 2, idle_timeout=2, first_event_timeout=0.4)
            assert 0.35 < loop.time() - started < 1.5

            # Headers at once, then only comments: the deadline still falls 0.4 s after sending.
            started = loop.time()
            response = await client.post(target, b"{}", 2, idle_timeout=2, first_event_timeout=0.4)
            with pytest.raises(TimeoutError):
                async for _ in response.reads():
                    pass
            assert 0.35 < loop.time() - started < 1.5
            response.close()

            # Once the caller says the first event came, only the idle limit applies.
            response = await client.post(target, b"{}", 2, idle_timeout=2, first_event_timeout=0.4)
            response.started()
            body = b"".join([piece async for piece in response.reads()])
            assert body.endswith(b'data: {"a":1}\n\n') and body.count(b": PROCESSING") == 12
            await client.close()

    asyncio.run(scenario())


def test_idle_timeout_and_reset_mid_body() -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
            await server.read_request(reader)
            writer.write(SSE_HEAD + b'%x\r\ndata: {"a":1}\n\n\r\n' % 15)
            await writer.drain()
            if n == 1:
                await asyncio.sleep(5)  # goes quiet
            else:
                writer.transport.abort()  # drops the connection mid-body

        async with Server(handler) as server:
            client = UpstreamClient()
            await client.open()
            target = Target.post(server.url(), HEADERS)
            loop = asyncio.get_running_loop()
            started = loop.time()
            response = await client.post(target, b"{}", connect_timeout=2, idle_timeout=0.3)
            pieces = []
            with pytest.raises(TimeoutError):
                async for piece in response.reads():
                    pieces.append(piece)
            assert pieces == [b'data: {"a":1}\n\n']
            assert 0.25 < loop.time() - started < 2
            response.close()

            response = await client.post(target, b"{}", connect_timeout=2, idle_timeout=2)
            with pytest.raises(ConnectionFailed):
                async for _ in response.reads():
                    pass
            await client.close()

    asyncio.run(scenario())


def test_header_values_cannot_smuggle_lines() -> None:
    with pytest.raises(ValueError, match="line break"):
        Target.post("http://127.0.0.1:1/v1/chat/completions", {"Authorization": "Bearer k\r\nX-Evil: 1"})
    with pytest.raises(ValueError, match="http"):
        Target.post("ftp://127.0.0.1/v1", {})


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def test_tls_verifies_against_the_trust_store(
    ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            await server.read_request(reader)
            writer.write(SSE_HEAD + BODY)

    async def fetch(trusted: bool) -> bytes:
        if trusted:
            ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
            monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        else:
            monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "nothing.pem"))
        client = UpstreamClient()
        await client.open()
        try:
            return await _body(client, Target.post(server.url("https"), HEADERS))
        finally:
            await client.close()

    async def scenario() -> None:
        nonlocal server
        async with Server(handler, _server_context(ca)) as server:
            assert (await fetch(trusted=True)).endswith(b"data: [DONE]\n\n")
            with pytest.raises(ssl.SSLCertVerificationError):
                await fetch(trusted=False)

    server: Server
    asyncio.run(scenario())


def test_gateway_reaches_a_tls_provider_through_the_sdk(ca: trustme.CA, tmp_path: Path) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    fake = FakeUpstream("moonshot", api_key=KEY, ssl_context=_server_context(ca))
    fake.default = Answer(content="Hello over TLS.")
    config = f"""
[providers.moon]
style = "moonshot"
base_url = "{fake.base_url}"
api_key_env = "{KEY_ENV}"
[providers.moon.models."{MODEL}"]
pricing = {{ input = 0.60, cached_input = 0.15, output = 2.50 }}
"""
    gateway = GatewayProcess(tmp_path, config, env={KEY_ENV: KEY, "SSL_CERT_FILE": str(tmp_path / "ca.pem")})
    try:
        assert fake.base_url.startswith("https://")
        client = openai.OpenAI(base_url=gateway.api, api_key="unused", max_retries=0)
        completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert completion.choices[0].message.content == "Hello over TLS."
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello over TLS."
        assert len(fake.requests) == 2
    finally:
        gateway.stop()
        fake.stop()


def _unanswering_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listening socket whose accept queue is full: the kernel drops a new connection's SYN, as a host that
    is down or a server that is swamped does, so connecting waits without an answer."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)  # Linux queues backlog + 1 connections; nothing here ever accepts them
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(server.getsockname())
        fillers.append(filler)
    time.sleep(0.2)
    return server, fillers


def test_a_connect_timeout_is_told_apart_from_a_slow_answer(tmp_path: Path) -> None:
    server, fillers = _unanswering_listener()
    port = server.getsockname()[1]
    try:

        async def scenario() -> None:
            client = UpstreamClient()
            await client.open()
            target = Target.post(f"http://127.0.0.1:{port}/v1/chat/completions", HEADERS)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ConnectTimeout):
                await client.post(target, b"{}", connect_timeout=0.3, idle_timeout=2)
            assert 0.25 < loop.time() - started < 2
            await client.close()

        asyncio.run(scenario())

        config = f"""
[providers.down]
style = "openai"
base_url = "http://127.0.0.1:{port}/v1"
timeouts = {{ connect = 0.3, first_byte = 5.0, idle = 5.0 }}
[providers.down.models."{MODEL}"]
pricing = {{ input = 0.60, output = 2.50 }}
"""
        gateway = GatewayProcess(tmp_path, config)
        try:
            response = httpx.post(
                gateway.api + "/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
                timeout=30,
            )
            assert response.status_code == 504, response.text
            assert "could not connect within 0.3s" in response.json()["error"]["message"]
        finally:
            gateway.stop()
    finally:
        for sock in (server, *fillers):
            sock.close()
