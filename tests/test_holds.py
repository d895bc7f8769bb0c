"""MemoryHolds against a real SQLite ledger: what is left stays exact across settlements and batch writes."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from kimi_gateway.accounts.holds import HoldRequest, MemoryHolds, Shortfall
from kimi_gateway.accounts.keys import KeyStore
from kimi_gateway.accounts.ledger import Ledger, charge_row
from kimi_gateway.storage import Database, database_url


def test_balance_and_key_limit_stay_exact_across_flushes(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = Database(database_url(None, tmp_path))
        await db.migrate()
        _, key = await KeyStore(db).create(name="k", account_id="acct_h")
        ledger = Ledger(db)
        await ledger.credit("acct_h", Decimal(1))  # 10**9 nano-dollars
        holds = MemoryHolds(ledger)
        limit = 600_000_000

        # A charge made before the key's limit is ever checked, written after: the key's figure must count it.
        assert await holds.reserve(HoldRequest("g1", "acct_h", key.hash, 100_000_000, None)) is None
        await holds.settle("g1", "acct_h", key.hash, 40_000_000)
        assert await holds.reserve(HoldRequest("g2", "acct_h", key.hash, 10, limit)) is None
        await holds.settle("g2", "acct_h", key.hash, 0)
        await ledger.write([], [charge_row("g1", "acct_h", key.hash, 40_000_000)])
        holds.flushed([("acct_h", key.hash, 40_000_000)])

        # The key has 560,000,000 left; the account 960,000,000.
        assert await holds.reserve(HoldRequest("g3", "acct_h", key.hash, 560_000_001, limit)) == Shortfall(
            560_000_000, "key"
        )
        assert await holds.reserve(HoldRequest("g4", "acct_h", None, 960_000_001, None)) == Shortfall(
            960_000_000, "account"
        )
        assert await holds.reserve(HoldRequest("g5", "acct_h", None, 960_000_000, None)) is None
        # Everything is held now: even a free request waits for the hold to settle.
        assert await holds.reserve(HoldRequest("g6", "acct_h", None, 1, None)) == Shortfall(0, "account")
        await holds.settle("g5", "acct_h", None, 0)
        assert await holds.reserve(HoldRequest("g7", "acct_h", None, 960_000_000, None)) is None
        await db.close()

    asyncio.run(scenario())


def test_concurrent_requests_share_one_load(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = Database(database_url(None, tmp_path))
        await db.migrate()
        await KeyStore(db).create(name="k", account_id="acct_c")
        ledger = Ledger(db)
        await ledger.credit("acct_c", Decimal("0.000001"))  # 1,000 nano-dollars: ten holds of 100
        loads = 0
        totals = ledger.totals

        async def counted(account_id: str):  # type: ignore[no-untyped-def]
            nonlocal loads
            loads += 1
            return await totals(account_id)

        ledger.totals = counted  # type: ignore[method-assign]
        holds = MemoryHolds(ledger)
        results = await asyncio.gather(
            *(holds.reserve(HoldRequest(f"g{i}", "acct_c", None, 100, None)) for i in range(12))
        )
        assert loads == 1
        assert results.count(None) == 10 and len([r for r in results if isinstance(r, Shortfall)]) == 2
        await db.close()

    asyncio.run(scenario())
