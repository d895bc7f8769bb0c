"""The one pooled HTTP client every upstream adapter shares: keep-alive connections per provider origin.

Exchanges run over `http1.Connection`; see there why this is not aiohttp's client. The pool is LIFO, so
the connection most recently used (the one least likely to have been closed by its server) goes first.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from kimi_gateway import __version__
from kimi_gateway.providers.http1 import Connection, Response

# Many servers close idle keep-alive connections after 5 s (uvicorn's default, so vLLM's and SGLang's).
# One idle longer than this is closed rather than tried: a request must not cross the server's close on
# the wire, since it cannot then be sent again.
KEEPALIVE_SECONDS = 4.0
MAX_IDLE_PER_ORIGIN = 256


class ConnectTimeout(TimeoutError):
    """No connection to the upstream within the connect timeout (its host is down, or its queue is full)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one provider's requests go, with the fixed part of their head prebuilt."""

    host: str
    port: int
    tls: bool
    head: bytes  # request line and every header but Content-Length

    @classmethod
    def post(cls, url: str, headers: dict[str, str]) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        authority = host if parts.port is None else f"{host}:{port}"
        fields = {
            "Host": authority,
            "User-Agent": f"kimi-gateway/{__version__}",
            "Accept-Encoding": "gzip, deflate",
            **headers,
        }
        for name, value in fields.items():
            if any(c in name + value for c in "\r\n\0"):
                raise ValueError(f"header {name} holds a line break")
        lines = [f"POST {path} HTTP/1.1"] + [f"{name}: {value}" for name, value in fields.items()]
        return cls(parts.hostname, port, tls, ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1"))


class UpstreamClient:
    def __init__(self) -> None:
        self._pools: dict[tuple[str, int, bool], list[Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._open = False

    async def open(self) -> None:
        # The system's trust store; SSL_CERT_FILE and SSL_CERT_DIR point it elsewhere, as for any OpenSSL
        # program.
        self._ssl = ssl.create_default_context()
        self._open = True

    async def close(self) -> None:
        self._open = False
        for pool in self._pools.values():
            for connection in list(pool):
                connection.finish(reusable=False)
        self._pools.clear()

    async def post(
        self,
        target: Target,
        body: bytes,
        connect_timeout: float,
        idle_timeout: float,
        first_event_timeout: float | None = None,
    ) -> Response:
        """Send one POST and return once the response's headers are in; its body follows on `reads()`.

        With `first_event_timeout`, waits from the request's sending until the caller says `started()`
        (its first event) end in a TimeoutError after that many seconds: one timer with the idle limit's,
        a good deal cheaper than an `asyncio.timeout` block around the exchange.
        """
        if not self._open:
            raise RuntimeError("the upstream client is not open")
        data = target.head + b"%d\r\n\r\n" % len(body) + body
        connection = await self._connection(target, connect_timeout)
        response = connection.send(data, idle_timeout, first_event_timeout)
        try:
            await response.headers_received()
        except BaseException:
            # Never sent again on another connection, even if this one was a stale pooled one: a POST
            # the server may have begun is not ours to repeat (RFC 9112, 9.3.1). Routing moves on instead.
            response.close()
            raise
        return response

    async def _connection(self, target: Target, connect_timeout: float) -> Connection:
        key = (target.host, target.port, target.tls)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = []
        loop = asyncio.get_running_loop()
        while pool:
            connection = pool.pop()
            if connection.closed:
                continue
            if loop.time() - connection.idle_since > KEEPALIVE_SECONDS:
                connection.finish(reusable=False)
                continue
            return connection
        try:
            async with asyncio.timeout(connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(loop, pool, MAX_IDLE_PER_ORIGIN),
                    target.host,
                    target.port,
                    ssl=self._ssl if target.tls else None,
                    server_hostname=target.host if target.tls else None,
                )
        except TimeoutError:
            raise ConnectTimeout(f"no connection within {connect_timeout:g}s") from None
        return connection
