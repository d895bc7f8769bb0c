"""Ids for requests and completions: unique across processes, and cheap enough for every request.

Each process draws a random prefix from the operating system once (again after a fork); an id is that
prefix and a counter, so the hot path makes no system call. The ids are not secrets: a generation's record
is only shown to the account that owns it.
"""

from __future__ import annotations

import itertools
import os
import secrets


class _Sequence:
    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"


_ids = _Sequence()


def new_id(prefix: str) -> str:
    """`prefix` followed by 28 hex digits, unique among every id any process of ours makes."""
    return prefix + _ids.next()
