"""Limits shared by every replica, as Lua fragments run atomically on Redis's own clock.

Concurrency slots are members of a sorted set scored by their expiry, so the slots of a replica that died
mid-request free themselves after `slot_seconds`. The fragments are joined with the credit-hold ones into
one admission script and one finish script (accounts/admission.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from kimi_gateway.limits.base import WINDOW_MS, Decision, Window

NOW = "local clock = redis.call('TIME') local now = clock[1] * 1000 + math.floor(clock[2] / 1000)\n"

# Reads table L = {p, slot, conc, ttl, window, bucket, windows = {{bucket, rpm}, ...}}; returns a refusal,
# or leaves `lim_ok` (what to answer when admitted) for LIMIT_COMMIT.
LIMIT_CHECK = """
local lim_ck = L.p .. 'conc:' .. L.bucket
redis.call('ZREMRANGEBYSCORE', lim_ck, '-inf', now)
local lim_busy = redis.call('ZCARD', lim_ck)
if lim_busy >= L.conc then return {0, 'concurrency', L.conc, 0, now + 1000} end
local lim_ok = nil
for _, w in ipairs(L.windows) do
  local rk = L.p .. 'rpm:' .. w[1]
  redis.call('ZREMRANGEBYSCORE', rk, '-inf', now - L.window)
  local count = redis.call('ZCARD', rk)
  local oldest = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
  local reset = (oldest[2] and tonumber(oldest[2]) or now) + L.window
  if count >= w[2] then return {0, 'rpm', w[2], 0, reset} end
  if not lim_ok then lim_ok = {1, 'rpm', w[2], w[2] - count - 1, reset} end
end
lim_ok = lim_ok or {1, 'concurrency', L.conc, L.conc - lim_busy - 1, now}
"""

LIMIT_COMMIT = """
for _, w in ipairs(L.windows) do
  local rk = L.p .. 'rpm:' .. w[1]
  redis.call('ZADD', rk, now, L.slot)
  redis.call('PEXPIRE', rk, L.window)
end
redis.call('ZADD', lim_ck, now + L.ttl, L.slot)
redis.call('PEXPIRE', lim_ck, L.ttl)
"""

# Reads table R = {p, bucket, slot}.
LIMIT_RELEASE = "redis.call('ZREM', R.p .. 'conc:' .. R.bucket, R.slot)\n"


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
