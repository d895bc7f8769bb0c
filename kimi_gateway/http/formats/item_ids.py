"""Ids of a response's items that name their response.

An item's id is its kind, the 28 hex digits of its response's id, and a number: `rs_<28 hex><4 hex>`. A
later request's `{"type": "item_reference", "id": ...}` (the AI SDK's default for reasoning it was given
with `store`) then finds the stored response that holds the item, with no index of items to keep.
"""

from __future__ import annotations

import string

_TOKEN = 28
_HEX = frozenset(string.hexdigits.lower())


class ItemIds:
    __slots__ = ("_count", "_token")

    def __init__(self, response_id: str) -> None:
        self._token = response_id.removeprefix("resp_")
        self._count = 0

    def next(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._token}{self._count:04x}"


def response_of(item_id: str) -> str | None:
    """The id of the response an item id names, if it is one of ours."""
    kind, _, rest = item_id.partition("_")
    if not kind or len(rest) != _TOKEN + 4 or not set(rest) <= _HEX:
        return None
    return "resp_" + rest[:_TOKEN]
