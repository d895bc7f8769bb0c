"""Our Starlette responses: JSON encoded with orjson, and the hot route's JSON and SSE responses sent as raw
ASGI messages. (Named apart from the Responses API, whose format is http/formats/responses.py.)"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from kimi_gateway.core.disconnects import DisconnectWatch
from kimi_gateway.errors import APIError
from kimi_gateway.http.disconnects import client_gone


class ORJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: APIError) -> ORJSONResponse:
    return ORJSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)


class FastJSONResponse(Response):
    """A 200 JSON body sent as two raw ASGI messages: for the hot route, where Starlette's header
    handling is a measurable share of the gateway's own cost."""

    def __init__(self, content: Any) -> None:  # no super().__init__: its header building is the cost
        self.body = orjson.dumps(content)
        self.status_code = 200
        self.raw_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(self.body)),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if len(self.body) >= GZIP_MIN_BYTES and accepts_gzip(scope):
            self.body = gzip.compress(self.body, compresslevel=6)
            self.raw_headers[1] = (b"content-length", b"%d" % len(self.body))
            self.raw_headers += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


# A completion this large is worth compressing (most are a few hundred bytes: they go out as they are).
GZIP_MIN_BYTES = 4096


def accepts_gzip(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"accept-encoding":
            return bool(value.find(b"gzip") >= 0)
    return False


class FastSSEResponse(Response):
    """A server-sent event stream, one ASGI message per piece the iterator yields.

    Starlette's StreamingResponse runs a task group of two tasks per response to listen for a disconnect;
    here the disconnect watch starts only for streams still running after half a second. Either way a
    client leaving cancels the iterator, whose own clean-up stops the generation.
    """

    def __init__(
        self,
        pieces: AsyncIterator[bytes],
        headers: dict[str, str],
        interrupted: Callable[[], bytes] | None = None,
    ) -> None:
        self._pieces = pieces
        # Makes the last frame of a stream the server had to stop (only then: a format's frames count).
        self._interrupted = interrupted
        self.background = None  # read by FastAPI when a route returns the response
        self.status_code = 200
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8")] + [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with DisconnectWatch(client_gone(receive)) as watch:
            try:
                await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
                async for piece in self._pieces:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except asyncio.CancelledError:
                if not watch.fired:
                    # Not the client: the server, past its graceful shutdown. The stream ends with an
                    # error the client can read, rather than cut off.
                    task = asyncio.current_task()
                    assert task is not None
                    task.uncancel()
                    await self._pieces.aclose()  # type: ignore[attr-defined]
                    last = self._interrupted() if self._interrupted is not None else b""
                    await send({"type": "http.response.body", "body": last, "more_body": False})
                    return
                watch.absorb()  # the client left: nothing more to send, nothing to report
            finally:
                await self._pieces.aclose()  # type: ignore[attr-defined]
