"""Reading server-sent events from a response body.

Small on purpose, and reads whatever bytes have arrived rather than a line at a time: this runs once per
upstream chunk on the hot path, and a burst of events usually arrives in one network read. Data stays
bytes: orjson parses bytes directly, so decoding to str first would be a copy for nothing.

Searches use `find`, not `in`: on CPython, `bytes in bytes` first tries the operand as an integer and
builds and discards a TypeError, which made those checks about 4% of a proxied request's instructions.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


def _data(block: bytes) -> bytes | None:
    """The data of one event block (multi-line data joined with newlines); None for comment-only blocks."""
    if block.startswith(b"data: ") and block.find(b"\n") < 0:  # the common case: one data line
        return block[6:]
    lines = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            lines.append(value[1:] if value.startswith(b" ") else value)
        # `: comment`, `event:`, `id:` and `retry:` lines carry nothing we use
    return b"\n".join(lines) if lines else None


async def sse_data(reads: AsyncIterable[bytes]) -> AsyncIterator[list[bytes]]:
    """Each event's data, in order, from the body's pieces as the network delivers them.

    One list per piece that completed at least one event: what arrived together travels on together.
    """
    buffer = b""
    after_cr = False  # a CRLF may be split across two reads
    async for chunk in reads:
        if after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        after_cr = chunk.endswith(b"\r")
        if chunk.find(b"\r") >= 0:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer += chunk  # no copy when the buffer is empty, the usual case
        if buffer.find(b"\n\n") < 0:
            continue
        blocks = buffer.split(b"\n\n")
        buffer = blocks.pop()  # what follows the last blank line is an event still arriving
        # The one-data-line case inline: a call per event is a measurable share of a chunk's cost.
        batch = [
            data
            for block in blocks
            if (data := block[6:] if block[:6] == b"data: " and block.find(b"\n") < 0 else _data(block))
            is not None
        ]
        if batch:
            yield batch
    if buffer.strip():
        data = _data(buffer.strip(b"\n"))
        if data is not None:
            yield [data]
