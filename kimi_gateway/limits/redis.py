"""Limits shared by every replica: the arguments and answers of the scripts that apply them atomically on
Redis's own clock (accounts/lua/admit.lua and finish.lua, together with the credit holds).

Concurrency slots are members of a sorted set scored by their expiry, so the slots of a replica that died
mid-request free themselves after `slot_seconds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from kimi_gateway.limits.base import WINDOW_MS, Decision, Window


def limit_args(
    prefix: str, slot: str, concurrency_bucket: str, concurrency: int, windows: Sequence[Window], slot_ms: int
) -> bytes:
    return orjson.dumps(
        {
            "p": prefix,
            "slot": slot,
            "conc": concurrency,
            "ttl": slot_ms,
            "window": WINDOW_MS,
            "bucket": concurrency_bucket,
            "windows": [[w.bucket, w.rpm] for w in windows],
        }
    )


def release_args(prefix: str, slot: str, concurrency_bucket: str) -> bytes:
    return orjson.dumps({"p": prefix, "bucket": concurrency_bucket, "slot": slot})


def decision(result: list[Any]) -> Decision:
    allowed, reason, limit, remaining, reset = result
    if isinstance(reason, bytes):
        reason = reason.decode()
    return Decision(bool(allowed), str(reason), int(limit), int(remaining), int(reset))
