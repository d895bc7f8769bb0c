"""Reading and validating request bodies under a size limit."""

from __future__ import annotations

import asyncio
import re
import time
import zlib
from collections.abc import Callable
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kimi_gateway.errors import APIError
from kimi_gateway.http.replies import error_response
from kimi_gateway.http.validation import validation_error

M = TypeVar("M", bound=BaseModel)
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


# A body must keep coming: BODY_GRACE seconds, plus one for every MIN_BODY_RATE bytes received. A client
# sending a byte a second would otherwise hold a connection (and its slot) for as long as it liked.
BODY_GRACE = 10.0
MIN_BODY_RATE = 16 * 1024


def too_slow() -> APIError:
    return APIError(
        408,
        f"The request body arrived too slowly (under {MIN_BODY_RATE // 1024} KB/s after {BODY_GRACE:g} s).",
        code="request_timeout",
    )


def too_many_slow(limit: int) -> APIError:
    return APIError(
        429,
        f"Too many request bodies are still arriving from your address ({limit} at most at once): send "
        "each body whole, or fewer at a time.",
        code="rate_limit_exceeded",
    )


# A body still arriving this long after its first bytes counts as slow, against its client's allowance:
# bodies that arrive at network speed never do (behind a proxy, every client shares its address).
SLOW_AFTER = 1.0
# The scope key by which BodyLimitMiddleware tells `read_body` that it already times the body.
TIMED = "kimi_gateway.body_timed"


class BodyDeadline:
    """Ends a body read that falls behind the minimum rate. Armed only once a body takes more than one
    message (most arrive whole in the first): a timer that cancels the reading task while it waits for
    more, not a timeout block around every request's read.

    A body still arriving after `SLOW_AFTER` is also counted against its client address, at most
    `per_client` at once (the next gets 429): each is cut when it falls behind the rate, but a client could
    open new ones as fast as they are cut and hold every connection."""

    __slots__ = (
        "_address",
        "_counted",
        "_handle",
        "_slow_handle",
        "_started",
        "_task",
        "_waiting",
        "expired",
        "fired",
        "refused",
    )

    per_client = 32  # [server] slow_bodies_per_client
    _arriving: ClassVar[dict[str, int]] = {}

    def __init__(self, scope: Scope) -> None:
        client = scope.get("client")
        self._address = client[0] if client else ""
        self._counted = False
        self._task = asyncio.current_task()
        self._started = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self._slow_handle: asyncio.TimerHandle | None = loop.call_later(SLOW_AFTER, self._count)
        self._waiting = False
        self.expired = False  # behind the rate: the next read fails
        self.refused = False  # one slow body too many from its address: the next read fails
        self.fired = False  # a timer cancelled a read in progress

    def _count(self) -> None:
        self._slow_handle = None
        arriving = self._arriving.get(self._address, 0)
        if arriving >= self.per_client:
            self.refused = True
            self._interrupt()
            return
        self._arriving[self._address] = arriving + 1
        self._counted = True

    def received(self, size: int) -> None:
        """`size` bytes so far: the next message is due by the grace plus the time they earn."""
        if self._handle is not None:
            self._handle.cancel()
        delay = self._started + BODY_GRACE + size / MIN_BODY_RATE - time.monotonic()
        self._handle = asyncio.get_running_loop().call_later(max(0.0, delay), self._fire)

    def _fire(self) -> None:
        self.expired = True
        self._interrupt()

    def _interrupt(self) -> None:
        if self._waiting and self._task is not None:
            self.fired = True
            self._task.cancel()

    def _error(self) -> APIError:
        return too_many_slow(self.per_client) if self.refused else too_slow()

    async def receive(self, receive: Receive) -> Message:
        if self.expired or self.refused:
            raise self._error()
        self._waiting = True
        try:
            return await receive()
        except asyncio.CancelledError:
            if not self.fired or self._task is None:
                raise  # the client left, or a shutdown
            self._task.uncancel()
            raise self._error() from None
        finally:
            self._waiting = False

    def close(self) -> None:
        """Once the body is whole, or its request over (either may come first; the second does nothing)."""
        for handle in (self._handle, self._slow_handle):
            if handle is not None:
                handle.cancel()
        self._handle = self._slow_handle = None
        if self._counted:
            self._counted = False
            left = self._arriving[self._address] - 1
            if left:
                self._arriving[self._address] = left
            else:
                del self._arriving[self._address]


def too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"Request body too large: the limit is {limit} bytes.",
        code="request_too_large",
    )


class Inflater:
    """A gzip request body (`Content-Encoding: gzip`), decompressed as it arrives, its decompressed size
    capped: a small compressed body cannot expand past the limit."""

    def __init__(self, limit: int, error: APIError) -> None:
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._left = limit
        self._error = error

    def feed(self, chunk: bytes) -> bytes:
        try:
            out = self._inflate.decompress(chunk, self._left + 1)
        except zlib.error:
            raise APIError(400, "The request body is not valid gzip.", code="invalid_encoding") from None
        self._left -= len(out)
        if self._left < 0 or self._inflate.unconsumed_tail:
            raise self._error
        return out


def _encoding(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"content-encoding":
            return value.strip().lower()
    return None


def unsupported_encoding(encoding: bytes) -> APIError:
    return APIError(
        415,
        f"Unsupported Content-Encoding '{encoding.decode('latin-1')}': send the body plain or gzip.",
        code="unsupported_encoding",
    )


class BodyLimitMiddleware:
    """A running cap on every request body, whatever its framing: Content-Length is checked first, and the
    bytes are counted as they arrive, so a chunked upload (no length given) is refused with 413 as soon
    as it passes the limit, before it is spooled or read into memory. A gzip body is inflated on the way
    in, under the same cap, and the routes see it plain."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], tuple[int, APIError]]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, error = self.limit_for(scope)
        headers = scope["headers"]
        for name, value in headers:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    await error_response(error)(scope, receive, send)
                    return
                break
        encoding = _encoding(headers)
        inflater: Inflater | None = None
        if encoding not in (None, b"identity"):
            if encoding != b"gzip":
                await error_response(unsupported_encoding(encoding))(scope, receive, send)
                return
            inflater = Inflater(limit, error)
            plain = [(n, v) for n, v in headers if n not in (b"content-encoding", b"content-length")]
            scope = {**scope, "headers": plain}
        size = 0
        deadline: BodyDeadline | None = None

        async def counted() -> Message:
            nonlocal size, deadline
            message = await (receive() if deadline is None else deadline.receive(receive))
            if message["type"] == "http.request":
                if message.get("more_body", False):
                    if deadline is None:
                        deadline = BodyDeadline(scope)
                    deadline.received(size)
                elif deadline is not None:
                    deadline.close()
                body = message.get("body", b"")
                if inflater is not None:
                    body = inflater.feed(body)
                    message = {**message, "body": body}
                size += len(body)
                if size > limit:
                    raise error
            return message

        try:
            await self.app({**scope, TIMED: True}, counted, send)
        finally:
            if deadline is not None:
                deadline.close()


async def read_body(request: Request, limit: int) -> bytes:
    # The raw headers: `request.headers` would build a Headers object for this one look-up.
    inflater: Inflater | None = None
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise too_large(limit)
        elif name == b"content-encoding":
            encoding = value.strip().lower()
            if encoding == b"gzip":
                inflater = Inflater(limit, too_large(limit))
            elif encoding != b"identity":
                raise unsupported_encoding(encoding)
    # ASGI messages read directly: Starlette's `stream()` is an async generator, a cost on every request.
    chunks: list[bytes] = []
    size = 0
    deadline: BodyDeadline | None = None
    timed = TIMED in request.scope
    try:
        while True:
            receive = request.receive
            message = await (receive() if deadline is None else deadline.receive(receive))
            chunk = _chunk(message, inflater)
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if timed:
                continue  # BodyLimitMiddleware times this body
            if deadline is None:
                deadline = BodyDeadline(request.scope)
            deadline.received(size)
    finally:
        if deadline is not None:
            deadline.close()


def _chunk(message: Message, inflater: Inflater | None) -> bytes:
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    chunk: bytes = message.get("body", b"")
    return inflater.feed(chunk) if inflater is not None else chunk


async def parse_body(
    request: Request,
    model: type[M],
    limit: int,
    invalid: Callable[[ValidationError], APIError] = validation_error,
) -> M:
    body = await read_body(request, limit)
    if not body:
        raise APIError(400, "The request body is empty; a JSON object is expected.", code="invalid_json")
    try:
        # One pass: pydantic parses the JSON and validates it together.
        return model.model_validate_json(body)
    except ValidationError as exc:
        error = invalid(exc)
        if error.code == "invalid_json" and _SURROGATE.search(body):
            error = APIError(
                400,
                "We could not parse the JSON body of your request: a string holds a lone UTF-16 surrogate "
                "(an unpaired \\ud800-\\udfff escape). JavaScript makes these when it cuts a string "
                "inside an emoji; send whole characters.",
                code="invalid_json",
            )
        raise error from None
