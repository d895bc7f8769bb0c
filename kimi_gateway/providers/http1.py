"""One HTTP/1.1 exchange with an upstream provider: an asyncio protocol around httptools' response parser.

Why not aiohttp's client here: on the gateway's hot path its per-request and per-read layers (request and
response objects, timers, the StreamReader that every body chunk passes through) cost about three times
what the whole exchange costs this way, measured in `bench/gateway_overhead.py`. Parsing stays with the
well-kept parser (httptools, the one uvicorn uses); this module only moves bytes between it and the caller.
Body data is handed over once per network read, not once per HTTP chunk, and a whole burst of server-sent
events therefore costs one wake-up of the reader.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections.abc import AsyncIterator
from typing import cast

import httptools

# Past this much unread body, stop reading from the socket until the reader catches up: a slow client must
# not make the gateway buffer a fast provider's whole answer.
_HIGH_WATER = 1 << 20
ERROR_BODY_LIMIT = 1 << 16


class ConnectionFailed(Exception):
    """The connection failed or closed before the response was complete."""

    def __init__(self, why: str) -> None:
        super().__init__(why)


class Response:
    """The status, headers and body of one upstream response, as they arrive."""

    def __init__(self, connection: Connection, idle_timeout: float) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._connection = connection
        self._loop = connection.loop
        self._idle_timeout = idle_timeout
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._decoder: zlib._Decompress | None = None
        self.keep_alive = False
        self._headers_done = False
        self._until_close = False
        self._complete = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._last_data = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._deadline = math.inf  # when the first event is due, until `started()`
        self._released = False

    # ---- parser callbacks (httptools calls these by name) ----------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self._connection.parser.get_status_code()
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self._raw_headers}
        encoding = self.headers.get("content-encoding", "").lower()
        if encoding in {"gzip", "deflate"}:
            # wbits 47: accept a gzip or a zlib header, whichever came
            self._decoder = zlib.decompressobj(47)
        # A body with neither a length nor chunked framing runs until the server closes the connection.
        self._until_close = (
            "content-length" not in self.headers
            and "chunked" not in self.headers.get("transfer-encoding", "").lower()
        )
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            body = self._decoder.decompress(body)
        self._chunks.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._chunks.append(tail)
        # Asked here: once the message is done, the parser has reset and no longer knows.
        self.keep_alive = not self._until_close and self._connection.parser.should_keep_alive()
        self._complete = True

    # ---- from the connection ---------------------------------------------------------------------------

    def _data_arrived(self) -> None:
        self._last_data = self._loop.time()
        if self._buffered > _HIGH_WATER:
            self._connection.pause()
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if self._error is None and not self._complete:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _arm_deadline(self, seconds: float) -> None:
        self._deadline = self._loop.time() + seconds
        self._idle_timer = self._loop.call_at(self._deadline, self._check_idle)

    def _check_idle(self) -> None:
        # One timer for both limits, and one per idle period rather than one per read: it re-arms itself
        # while data keeps coming. Before the headers only the first-event deadline counts.
        due = self._last_data + self._idle_timeout if self._headers_done else math.inf
        if self._deadline < due:
            due = self._deadline
        if self._loop.time() < due:
            self._idle_timer = self._loop.call_at(due, self._check_idle)
            return
        self._idle_timer = None
        if self._waiter is not None:
            self._fail(TimeoutError())
        else:
            self._idle_timer = self._loop.call_later(self._idle_timeout, self._check_idle)

    # ---- for the caller --------------------------------------------------------------------------------

    async def headers_received(self) -> None:
        while not self._headers_done:
            if self._error is not None:
                raise self._error
            await self._wait()
        self._last_data = self._loop.time()
        if self._idle_timer is None:  # else the deadline's timer is running, and it watches idling too
            self._idle_timer = self._loop.call_later(self._idle_timeout, self._check_idle)

    def started(self) -> None:
        """The first event has arrived: from now on only the idle timeout applies."""
        self._deadline = math.inf

    async def reads(self) -> AsyncIterator[bytes]:
        """The body, one piece per network read (all of what arrived since the last piece)."""
        while True:
            chunks = self._chunks
            if chunks:
                self._chunks = []
                self._buffered = 0
                self._connection.resume()
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
            elif self._complete:
                # Back to the pool at once, not when the caller gets round to closing its generator.
                self.release()
                return
            elif self._error is not None:
                raise self._error
            else:
                await self._wait()

    async def read(self, limit: int = ERROR_BODY_LIMIT) -> bytes:
        """The whole body, up to `limit` bytes (an error body; never a model's answer)."""
        parts: list[bytes] = []
        size = 0
        async for piece in self.reads():
            parts.append(piece)
            size += len(piece)
            if size >= limit:
                break
        return b"".join(parts)[:limit]

    def release(self) -> None:
        """Give the connection back to the pool if the exchange finished cleanly; otherwise close it."""
        self._end(reusable=self._complete and self.keep_alive and self._error is None)

    def close(self) -> None:
        """Drop the connection now: how a provider hears that the client went away."""
        self._end(reusable=False)

    def _end(self, *, reusable: bool) -> None:
        if self._released:
            return
        self._released = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._connection.finish(reusable=reusable)


class Connection(asyncio.Protocol):
    """One keep-alive connection to a provider, carrying one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: list[Connection], max_idle: int) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._pool = pool
        self._max_idle = max_idle
        self._response: Response | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, data: bytes, idle_timeout: float, first_event_timeout: float | None = None) -> Response:
        response = self._response = Response(self, idle_timeout)
        self.parser = httptools.HttpResponseParser(response)
        assert self.transport is not None
        self.transport.write(data)
        if first_event_timeout is not None:
            response._arm_deadline(first_event_timeout)
        return response

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:  # bytes nobody asked for: the connection can no longer be trusted
            self._close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(ConnectionFailed(f"malformed HTTP response ({exc})"))
            self._close()
            return
        response._data_arrived()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self._response
        if response is not None:
            if not response._complete and response._until_close:
                response.on_message_complete()
            why = f"connection reset ({type(exc).__name__})" if exc is not None else "connection closed"
            response._fail(ConnectionFailed(why))
        self._leave_pool()

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def finish(self, *, reusable: bool) -> None:
        self._response = None
        if reusable and not self.closed and len(self._pool) < self._max_idle:
            self.resume()
            self.idle_since = self.loop.time()
            self._pool.append(self)
        else:
            self._close()

    def _close(self) -> None:
        self.closed = True
        self._leave_pool()
        if self.transport is not None:
            self.transport.close()

    def _leave_pool(self) -> None:
        if self in self._pool:
            self._pool.remove(self)
