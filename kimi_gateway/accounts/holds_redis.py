"""Credit holds kept in Redis, so that every replica checks against one live balance.

The account's balance (`bal`, nano-dollars) is loaded once from the ledger and from then on moved by the
same atomic scripts that place holds and settle charges, so a charge made on one replica is visible to all
the others before it reaches the database. A hold carries an expiry: when a replica dies holding one,
the next reservation on any replica releases it.
"""

from __future__ import annotations

from redis.asyncio import Redis

from kimi_gateway.accounts.holds import HoldRequest, Shortfall
from kimi_gateway.accounts.ledger import Ledger

_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

RESERVE = (
    _NOW
    + """
local p, hold, amount, limit, ttl, acct, key = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
  tonumber(ARGV[5]), ARGV[6], ARGV[7]
local holds = p .. 'holds'
for _, id in ipairs(redis.call('ZRANGEBYSCORE', holds, '-inf', now, 'LIMIT', 0, 100)) do
  local h = redis.call('HMGET', p .. 'hold:' .. id, 'a', 'k', 'n')
  if h[3] then
    redis.call('HINCRBY', p .. 'acct:' .. h[1], 'held', -tonumber(h[3]))
    if h[2] ~= '' then redis.call('HINCRBY', p .. 'key:' .. h[2], 'held', -tonumber(h[3])) end
  end
  redis.call('DEL', p .. 'hold:' .. id)
  redis.call('ZREM', holds, id)
end
local ak = p .. 'acct:' .. acct
local bal = redis.call('HGET', ak, 'bal')
if not bal then return {-1, 0} end
local available = tonumber(bal) - tonumber(redis.call('HGET', ak, 'held') or '0')
if available < 0 or amount > available then return {0, available} end
local kk = p .. 'key:' .. key
local held_key = ''
if key ~= '' and limit >= 0 then
  local used = redis.call('HGET', kk, 'used')
  if not used then return {-2, 0} end
  local left = limit - tonumber(used) - tonumber(redis.call('HGET', kk, 'held') or '0')
  if amount > left then return {2, left} end
  redis.call('HINCRBY', kk, 'held', amount)
  held_key = key
end
redis.call('HINCRBY', ak, 'held', amount)
redis.call('HSET', p .. 'hold:' .. hold, 'a', acct, 'k', held_key, 'n', amount)
redis.call('ZADD', holds, now + ttl, hold)
return {1, available - amount}
"""
)

SETTLE = """
local p, hold, cost, acct, key = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local done = p .. 'settled:' .. hold
if redis.call('EXISTS', done) == 1 then return 0 end
local hk = p .. 'hold:' .. hold
local h = redis.call('HMGET', hk, 'k', 'n')
if h[2] then
  redis.call('HINCRBY', p .. 'acct:' .. acct, 'held', -tonumber(h[2]))
  if h[1] ~= '' then redis.call('HINCRBY', p .. 'key:' .. h[1], 'held', -tonumber(h[2])) end
  redis.call('DEL', hk)
  redis.call('ZREM', p .. 'holds', hold)
end
if cost > 0 then
  local ak = p .. 'acct:' .. acct
  if redis.call('HEXISTS', ak, 'bal') == 1 then redis.call('HINCRBY', ak, 'bal', -cost) end
  local kk = p .. 'key:' .. key
  if key ~= '' and redis.call('HEXISTS', kk, 'used') == 1 then redis.call('HINCRBY', kk, 'used', cost) end
end
redis.call('SET', done, 1, 'EX', 86400)
return 1
"""

CREDIT = """
local ak = ARGV[1] .. 'acct:' .. ARGV[2]
if redis.call('HEXISTS', ak, 'bal') == 1 then redis.call('HINCRBY', ak, 'bal', tonumber(ARGV[3])) end
return 1
"""


class RedisHolds:
    def __init__(
        self, redis: Redis, ledger: Ledger, prefix: str = "kg:", hold_seconds: float = 900.0
    ) -> None:
        self.redis = redis
        self.ledger = ledger
        self.prefix = prefix
        self.hold_seconds = hold_seconds  # a hold older than this belonged to a replica that died
        self._reserve = self.redis.register_script(RESERVE)
        self._settle = self.redis.register_script(SETTLE)
        self._credit = self.redis.register_script(CREDIT)

    async def reserve(self, request: HoldRequest) -> Shortfall | None:
        limit = -1 if request.key_limit is None else request.key_limit
        args: list[str | int] = [
            self.prefix,
            request.hold_id,
            request.amount,
            limit,
            int(self.hold_seconds * 1000),
            request.account_id,
            request.key_hash or "",
        ]
        for _ in range(3):
            status, value = await self._reserve(args=args)
            if status == 1:
                return None
            if status == 0:
                return Shortfall(int(value), "account")
            if status == 2:
                return Shortfall(int(value), "key")
            # First use since Redis started: seed the live figure from the ledger, once for all replicas.
            if status == -1:
                totals = await self.ledger.totals(request.account_id)
                await self.redis.hsetnx(f"{self.prefix}acct:{request.account_id}", "bal", totals.balance)
            else:
                used = await self.ledger.key_usage(request.key_hash or "")
                await self.redis.hsetnx(f"{self.prefix}key:{request.key_hash}", "used", used)
        raise RuntimeError("could not seed the balance in Redis")

    async def settle(self, hold_id: str, account_id: str, key_hash: str | None, cost: int) -> None:
        await self._settle(args=[self.prefix, hold_id, cost, account_id, key_hash or ""])

    async def credited(self, account_id: str, amount: int) -> None:
        await self._credit(args=[self.prefix, account_id, amount])

    def flushed(self, charges: list[tuple[str, str | None, int]]) -> None:
        return None  # Redis already counts them

    async def close(self) -> None:
        return None
