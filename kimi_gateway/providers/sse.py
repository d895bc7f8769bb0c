"""Reading server-sent events from an aiohttp response body.

Small on purpose, and reads whatever bytes have arrived rather than a line at a time: this runs once per
upstream chunk on the hot path, and a burst of events usually arrives in one network read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp


def _data(block: bytes) -> str | None:
    """The data of one event block (multi-line data joined with newlines); None for comment-only blocks."""
    if block.startswith(b"data:") and b"\n" not in block:  # the common case: one data line
        value = block[5:]
        return (value[1:] if value.startswith(b" ") else value).decode("utf-8")
    lines = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append((value[1:] if value.startswith(b" ") else value).decode("utf-8"))
        # `: comment`, `event:`, `id:` and `retry:` lines carry nothing we use
    return "\n".join(lines) if lines else None


async def sse_data(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """Yield each event's data, in order."""
    buffer = b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        start = 0
        while (end := buffer.find(b"\n\n", start)) != -1:
            data = _data(buffer[start:end])
            start = end + 2
            if data is not None:
                yield data
        buffer = buffer[start:]
    if buffer.strip():
        data = _data(buffer.strip(b"\n"))
        if data is not None:
            yield data
