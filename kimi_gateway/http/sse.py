"""Server-sent event frames, as every streamed format writes them."""

from __future__ import annotations

from typing import Any

import orjson

DONE_LINE = b"data: [DONE]\n\n"
# A comment line, sent while the first events are awaited (OpenRouter's): clients ignore it.
KEEPALIVE = b": PROCESSING\n\n"


def sse_line(payload: Any) -> bytes:
    """One SSE `data:` event."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"
