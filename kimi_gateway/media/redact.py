"""Messages as logs may show them: media replaced by a hash and a size, never bytes or data URLs."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel

_MEDIA_KEYS = frozenset({"url", "file_data", "data", "image_url", "video_url"})


def _stub(url: str) -> str:
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    kind = "data URL" if url.startswith("data:") else "URL"
    return f"<{kind}, {len(url)} chars, sha256:{digest}>"


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in _MEDIA_KEYS and isinstance(item, str):
                out[key] = _stub(item)
            else:
                out[key] = _scrub(item)
        return out
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value


def redacted(messages: list[Any]) -> list[Any]:
    return [_scrub(m.model_dump(exclude_none=True) if isinstance(m, BaseModel) else m) for m in messages]
