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
from kimi_gateway.accounts.scripts import script


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
        self._settle = self.redis.register_script(script("settle.lua"))
        self._credit = self.redis.register_script(script("credit.lua"))

    async def settle(self, hold_id: str, account_id: str, key_hash: str | None, cost: int) -> None:
        await self._settle(args=[settle_args(self.prefix, hold_id, account_id, key_hash, cost)])

    async def credited(self, account_id: str, amount: int) -> None:
        await self._credit(args=[self.prefix, account_id, str(amount)])

    def flushed(self, charges: list[tuple[str, str | None, int]]) -> None:
        return None  # Redis already counts them

    async def close(self) -> None:
        return None
