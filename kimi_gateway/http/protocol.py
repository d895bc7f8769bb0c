"""The HTTP/1.1 connection itself, hardened: uvicorn's httptools protocol with the limits it lacks.

- Request headers must arrive within `header_timeout_seconds` of the connection opening (or, on a kept-alive
  connection, of the request's first byte): slow-loris clients and sockets that never speak get 408 and
  are closed.
- Request headers may total `max_header_bytes`: past that, 431 and close, before the rest is buffered
  (httptools itself has no limit: an 8 MB header would be held whole).
- At most `max_connections` connections at once: the next ones get 503 and are closed at once.

Bodies and responses are never timed here (streams may rightly run for minutes). uvicorn loads this class
by its import path in every worker; `configure` sets the limits from the gateway's config in each.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from kimi_gateway.config import ServerConfig
from kimi_gateway.http.body import BodyDeadline

PATH = "kimi_gateway.http.protocol:GatewayProtocol"


def configure(config: ServerConfig) -> None:
    GatewayProtocol.header_timeout = config.header_timeout_seconds
    GatewayProtocol.max_header_bytes = config.max_header_bytes
    GatewayProtocol.max_connections = config.max_connections
    BodyDeadline.per_client = config.slow_bodies_per_client


class GatewayProtocol(HttpToolsProtocol):
    header_timeout = 10.0
    max_header_bytes = 64 * 1024
    max_connections = 1000

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._in_headers = True
        self._header_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            self._refuse(503, b"Too many connections")
            return
        self._arm()  # a connection that never sends a byte is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._in_headers:
            super().data_received(data)
            return
        # The parser never sees more header bytes than the allowance: what follows a finished header
        # block (a body, a pipelined request) is passed on after it.
        room = self.max_header_bytes - self._header_bytes
        head, tail = data[:room], data[room:]
        self._header_bytes += len(head)
        super().data_received(head)
        transport: Any = self.transport
        if not tail or transport.is_closing() or transport.get_protocol() is not self:
            return  # all taken, or uvicorn answered 400 itself, or the connection became a WebSocket
        if self._reading_headers():  # the parser may have finished them in the call above
            self._refuse(431, b"Request header fields too large")
        else:
            self.data_received(tail)

    def _reading_headers(self) -> bool:
        return self._in_headers

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        if self._header_timer is None:  # the first request keeps the deadline set at connect
            self._header_bytes = 0
            self._arm()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._refuse, 408, b"Request timeout")

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _refuse(self, status: int, message: bytes) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        cycle: Any = self.cycle
        if cycle is None or cycle.response_complete:  # never write into a response still going out
            self.transport.write(
                b"".join(
                    [
                        STATUS_LINE[status],
                        *(
                            name + b": " + value + b"\r\n"
                            for name, value in self.server_state.default_headers
                        ),
                        b"content-type: application/json\r\nconnection: close\r\n",
                        b"content-length: %d\r\n\r\n"
                        % (len(message) + 2 + len(_ERROR_HEAD) + len(_ERROR_TAIL)),
                        _ERROR_HEAD,
                        b'"' + message + b'"',
                        _ERROR_TAIL,
                    ]
                )
            )
        self.transport.close()


# OpenAI's error shape, as every other refusal of the gateway.
_ERROR_HEAD = b'{"error":{"message":'
_ERROR_TAIL = b',"type":"invalid_request_error","param":null,"code":null}}'
