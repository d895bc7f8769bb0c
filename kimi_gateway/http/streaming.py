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
from kimi_gateway.http.completions import ResponseMeta
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


async def sse_stream(
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
            while batch is not None:
                if meta.ttft_ms is None and any(type(event) is Delta for event in batch):
                    meta.ttft_ms = round((time.perf_counter() - meta.started) * 1000, 2)
                encode(batch, out)
                if out:
                    yield b"".join(out)
                    out = []
                batch = await anext(batches, None)
            finished = True
        except APIError as exc:
            # The status line has gone out: the error travels in the stream, in the format's own way.
            finished = failed = True
            meta.finish_reason = "error"
            meta.serve(routed)
            yield encoder.failure(exc)
    finally:
        routed.cancel()
        if not first.done():
            first.cancel()
        await batches.aclose()  # type: ignore[attr-defined]
        if not finished:
            meta.client_closed = True
    tail = await encoder.closing(failed)
    if tail:
        yield tail
