"""One streamed response, whatever its wire format: the loop that waits for the generation's first events
(keeping the connection alive meanwhile), hands each batch of normalized events to the format's encoder,
reports a failure after the status line in-band, and stops the generation however the stream ends.

The formats (OpenAI chunks, Anthropic's events, the Responses API's events) differ only in their encoder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Protocol

from kimi_gateway.errors import APIError
from kimi_gateway.http.completions import ResponseMeta, delivered_tokens, record_cut
from kimi_gateway.providers.events import Delta, Event
from kimi_gateway.routing.attempts import RoutedGeneration


class StreamEncoder(Protocol):
    """A wire format's half of a stream. `encode` appends the frames for one batch of events to `out`;
    each batch goes out as one write."""

    keepalive: bytes  # sent while the first events are awaited (failover may be going on behind it)

    def opening(self) -> list[bytes]: ...

    def encode(self, batch: list[Event], out: list[bytes]) -> None: ...

    def failure(self, exc: APIError) -> bytes: ...

    async def closing(self, failed: bool) -> bytes: ...


class GenerationStop:
    """Stops the generation behind a stream, once, however the stream ends: from the stream's `finally`,
    or from the request's owner when the stream never began (the client left or the server shut down
    before the response started: a generator that never ran has no `finally` to run)."""

    __slots__ = ("_batches", "_first", "_routed", "done")

    def __init__(
        self,
        routed: RoutedGeneration,
        batches: AsyncIterator[list[Event]],
        first: asyncio.Future[list[Event]],
    ) -> None:
        self._routed, self._batches, self._first = routed, batches, first
        self.done = False

    async def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        self._routed.cancel()
        first = self._first
        if not first.done():
            # The task waiting for the first events is still inside `batches`: it must have left before
            # the generator can be closed (closing a running generator raises, and the close is lost).
            first.cancel()
            await asyncio.wait((first,))
        await self._batches.aclose()  # type: ignore[attr-defined]


async def sse_stream(
    stop: GenerationStop,
    routed: RoutedGeneration,
    batches: AsyncIterator[list[Event]],
    first: asyncio.Future[list[Event]],
    meta: ResponseMeta,
    encoder: StreamEncoder,
    keepalive: float,
) -> AsyncIterator[bytes]:
    """If the client disconnects, Starlette cancels this generator; `finally` then stops the generation,
    which reaches the upstream as a closed connection, and nothing after it runs."""
    finished = failed = False
    delivered = 0  # tokens that reached the client, estimated: what a stream cut before its usage costs
    try:
        try:
            while not first.done():
                await asyncio.wait((first,), timeout=keepalive)
                if not first.done():
                    yield encoder.keepalive
            batch: list[Event] | None = first.result()
            meta.serve(routed)
            out = encoder.opening()
            encode = encoder.encode
            turn = meta.turn
            while batch is not None:
                for event in batch:
                    if type(event) is Delta:
                        if meta.ttft_ms is None:
                            meta.ttft_ms = round((time.perf_counter() - meta.started) * 1000, 2)
                        delivered += delivered_tokens(event)
                        if turn is not None:
                            turn.add(event)
                encode(batch, out)
                if out:
                    yield b"".join(out)
                    out = []
                batch = await anext(batches, None)
            finished = True
            if turn is not None:
                turn.keep()
        except APIError as exc:
            # The status line has gone out: the error travels in the stream, in the format's own way.
            finished = failed = True
            meta.finish_reason = "error"
            meta.serve(routed)
            yield encoder.failure(exc)
    finally:
        await stop()
        if not finished:
            meta.client_closed = True
        if routed.served is not None:
            record_cut(meta, routed, delivered)  # nothing when the usage came
    tail = await encoder.closing(failed)
    if tail:
        yield tail
