"""Credit holds kept in Redis, so that every replica checks against one live balance.

The account's balance (`bal`, nano-dollars) is loaded once from the ledger and from then on moved by the
same atomic scripts that place holds and settle charges, so a charge made on one replica is visible to all
the others before it reaches the database. A hold carries an expiry: when a replica dies holding one,
the next reservation on any replica releases it.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis

from kimi_gateway.accounts.holds import HoldRequest, Shortfall
from kimi_gateway.accounts.ledger import Ledger
from kimi_gateway.limits.redis import NOW

# Reads table H = {p, hold, amount, limit, ttl, acct, key} (amounts as decimal strings: Lua numbers lose
# digits when turned back into command arguments). Returns {-1} or {-2} when the account's or key's live
# figure is not in Redis yet, {2, left, by} when the hold does not fit; otherwise leaves the hold for
# HOLD_COMMIT. Holds past their expiry (their replica died) are released first.
HOLD_CHECK = """
local hold_set = H.p .. 'holds'
for _, id in ipairs(redis.call('ZRANGEBYSCORE', hold_set, '-inf', now, 'LIMIT', 0, 100)) do
  local h = redis.call('HMGET', H.p .. 'hold:' .. id, 'a', 'k', 'n')
  if h[3] and h[3] ~= '0' then  -- '-0' is not an integer to Redis
    redis.call('HINCRBY', H.p .. 'acct:' .. h[1], 'held', '-' .. h[3])
    if h[2] ~= '' then redis.call('HINCRBY', H.p .. 'key:' .. h[2], 'held', '-' .. h[3]) end
  end
  redis.call('DEL', H.p .. 'hold:' .. id)
  redis.call('ZREM', hold_set, id)
end
local hold_amount = tonumber(H.amount)
local hold_ak = H.p .. 'acct:' .. H.acct
local hold_bal = redis.call('HGET', hold_ak, 'bal')
if not hold_bal then return {-1} end
local hold_available = tonumber(hold_bal) - tonumber(redis.call('HGET', hold_ak, 'held') or '0')
if hold_available < 0 or hold_amount > hold_available then return {2, hold_available, 'account'} end
local hold_kk = H.p .. 'key:' .. H.key
local hold_key = ''
if H.key ~= '' and H.limit ~= '' then
  local used = redis.call('HGET', hold_kk, 'used')
  if not used then return {-2} end
  local left = tonumber(H.limit) - tonumber(used) - tonumber(redis.call('HGET', hold_kk, 'held') or '0')
  if hold_amount > left then return {2, left, 'key'} end
  hold_key = H.key
end
"""

HOLD_COMMIT = """
if hold_key ~= '' then redis.call('HINCRBY', hold_kk, 'held', H.amount) end
redis.call('HINCRBY', hold_ak, 'held', H.amount)
redis.call('HSET', H.p .. 'hold:' .. H.hold, 'a', H.acct, 'k', hold_key, 'n', H.amount)
redis.call('ZADD', hold_set, now + H.ttl, H.hold)
"""

# Reads table S = {p, hold, cost, acct, key}. Settling twice (a replayed journal) changes nothing.
HOLD_SETTLE = """
local settled = S.p .. 'settled:' .. S.hold
if redis.call('EXISTS', settled) == 0 then
  local hk = S.p .. 'hold:' .. S.hold
  local h = redis.call('HMGET', hk, 'k', 'n')
  if h[2] then
    if h[2] ~= '0' then  -- '-0' is not an integer to Redis
      redis.call('HINCRBY', S.p .. 'acct:' .. S.acct, 'held', '-' .. h[2])
      if h[1] ~= '' then redis.call('HINCRBY', S.p .. 'key:' .. h[1], 'held', '-' .. h[2]) end
    end
    redis.call('DEL', hk)
    redis.call('ZREM', S.p .. 'holds', S.hold)
  end
  if tonumber(S.cost) > 0 then
    local ak = S.p .. 'acct:' .. S.acct
    if redis.call('HEXISTS', ak, 'bal') == 1 then redis.call('HINCRBY', ak, 'bal', '-' .. S.cost) end
    local kk = S.p .. 'key:' .. S.key
    if S.key ~= '' and redis.call('HEXISTS', kk, 'used') == 1 then
      redis.call('HINCRBY', kk, 'used', S.cost)
    end
  end
  redis.call('SET', settled, 1, 'EX', 86400)
end
"""

# Adds H.amount to the open hold H.hold, if it fits: HOLD_CHECK's checks, then the hold grows in place, so
# settling it later gives back (or charges against) the whole amount.
TOP_UP = (
    NOW
    + "local H = cjson.decode(ARGV[1])\n"
    + "if redis.call('EXISTS', H.p .. 'hold:' .. H.hold) == 0 then return {1} end\n"
    + HOLD_CHECK
    + """
if hold_key ~= '' then redis.call('HINCRBY', hold_kk, 'held', H.amount) end
redis.call('HINCRBY', hold_ak, 'held', H.amount)
redis.call('HINCRBY', H.p .. 'hold:' .. H.hold, 'n', H.amount)
return {1}
"""
)

SETTLE = "local S = cjson.decode(ARGV[1])\n" + HOLD_SETTLE + "return 1\n"

CREDIT = """
local ak = ARGV[1] .. 'acct:' .. ARGV[2]
if redis.call('HEXISTS', ak, 'bal') == 1 then redis.call('HINCRBY', ak, 'bal', ARGV[3]) end
return 1
"""


def hold_args(prefix: str, request: HoldRequest, hold_ms: int) -> bytes:
    return orjson.dumps(
        {
            "p": prefix,
            "hold": request.hold_id,
            "amount": str(request.amount),
            "limit": "" if request.key_limit is None else str(request.key_limit),
            "ttl": hold_ms,
            "acct": request.account_id,
            "key": request.key_hash or "",
        }
    )


def settle_args(prefix: str, hold_id: str, account_id: str, key_hash: str | None, cost: int) -> bytes:
    return orjson.dumps(
        {"p": prefix, "hold": hold_id, "cost": str(cost), "acct": account_id, "key": key_hash or ""}
    )


def shortfall(result: list[Any]) -> Shortfall:
    by = result[2].decode() if isinstance(result[2], bytes) else str(result[2])
    return Shortfall(int(result[1]), by)


async def seed(redis: Redis, ledger: Ledger, prefix: str, missing: int, request: HoldRequest) -> None:
    """First use since Redis started: load the live figure from the ledger, once for all replicas."""
    if missing == -1:
        totals = await ledger.totals(request.account_id)
        await redis.hsetnx(f"{prefix}acct:{request.account_id}", "bal", str(totals.balance))
    else:
        used = await ledger.key_usage(request.key_hash or "")
        await redis.hsetnx(f"{prefix}key:{request.key_hash}", "used", str(used))


class RedisHolds:
    def __init__(
        self, redis: Redis, ledger: Ledger, prefix: str = "kg:", hold_seconds: float = 900.0
    ) -> None:
        self.redis = redis
        self.ledger = ledger
        self.prefix = prefix
        self.hold_seconds = hold_seconds  # a hold older than this belonged to a replica that died
        self._settle = self.redis.register_script(SETTLE)
        self._credit = self.redis.register_script(CREDIT)

    async def settle(self, hold_id: str, account_id: str, key_hash: str | None, cost: int) -> None:
        await self._settle(args=[settle_args(self.prefix, hold_id, account_id, key_hash, cost)])

    async def credited(self, account_id: str, amount: int) -> None:
        await self._credit(args=[self.prefix, account_id, str(amount)])

    def flushed(self, charges: list[tuple[str, str | None, int]]) -> None:
        return None  # Redis already counts them

    async def close(self) -> None:
        return None
