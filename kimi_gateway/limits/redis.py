"""Limits shared by every replica: one atomic Lua script per admission, on Redis's own clock.

Concurrency slots are members of a sorted set scored by their expiry, so the slots of a replica that died
mid-request free themselves after `slot_seconds`.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from kimi_gateway.limits.base import WINDOW_MS, Decision, Window

ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local p, slot, conc, ttl, window = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ck = p .. 'conc:' .. ARGV[6]
redis.call('ZREMRANGEBYSCORE', ck, '-inf', now)
local busy = redis.call('ZCARD', ck)
if busy >= conc then return {0, 'concurrency', conc, 0, now + 1000} end
local first = nil
local n = (#ARGV - 6) / 2
for i = 1, n do
  local rk = p .. 'rpm:' .. ARGV[5 + 2 * i]
  local rpm = tonumber(ARGV[6 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', rk, '-inf', now - window)
  local count = redis.call('ZCARD', rk)
  local oldest = redis.call('ZRANGE', rk, 0, 0, 'WITHSCORES')
  local reset = (oldest[2] and tonumber(oldest[2]) or now) + window
  if count >= rpm then return {0, 'rpm', rpm, 0, reset} end
  if not first then first = {1, 'rpm', rpm, rpm - count - 1, reset} end
end
for i = 1, n do
  local rk = p .. 'rpm:' .. ARGV[5 + 2 * i]
  redis.call('ZADD', rk, now, slot)
  redis.call('PEXPIRE', rk, window)
end
redis.call('ZADD', ck, now + ttl, slot)
redis.call('PEXPIRE', ck, ttl)
return first or {1, 'concurrency', conc, conc - busy - 1, now}
"""


class RedisLimiter:
    def __init__(self, redis: Redis, prefix: str = "kg:", slot_seconds: float = 600.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.slot_ms = int(slot_seconds * 1000)
        self._acquire = redis.register_script(ACQUIRE)

    async def acquire(
        self, slot: str, concurrency_bucket: str, concurrency: int, windows: Sequence[Window]
    ) -> Decision:
        args: list[str | int] = [self.prefix, slot, concurrency, self.slot_ms, WINDOW_MS, concurrency_bucket]
        for window in windows:
            args += [window.bucket, window.rpm]
        allowed, reason, limit, remaining, reset = await self._acquire(args=args)
        if isinstance(reason, bytes):
            reason = reason.decode()
        return Decision(bool(allowed), str(reason), int(limit), int(remaining), int(reset))

    async def release(self, slot: str, concurrency_bucket: str) -> None:
        await self.redis.zrem(f"{self.prefix}conc:{concurrency_bucket}", slot)

    async def close(self) -> None:
        return None
