"""Batch writes go straight to the driver: the rows they store must be the ones a Core insert stores."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, text

from kimi_gateway.accounts.ledger import NANO, Ledger, charge_row
from kimi_gateway.storage import Database, database_url
from kimi_gateway.storage.models import Account, GenerationRecord, LedgerEntry
from tests.services import drop_postgres_database, fresh_postgres_database


def _generation(
    gid: str, *, cost: int, streamed: bool, ttft: float | None, tool_cost: int = 0
) -> dict[str, Any]:
    return {
        "id": gid,
        "account_id": "acct_l",
        "key_hash": "k" * 64,
        "model": "kimi-k2.5",
        "provider": "Moonshot AI",
        "status": "success",
        "finish_reason": "stop",
        "streamed": streamed,
        "prompt_tokens": 1234,
        "completion_tokens": 567,
        "cached_tokens": 1000,
        "reasoning_tokens": 12,
        "cost": cost,
        "latency_ms": 123.45,
        "ttft_ms": ttft,
        "app_referer": "https://example.com/app",
        "app_title": None,
        "created_at": 1795436120.123456,
        "request_id": "gen-loop" if tool_cost else None,
        "tool_calls": 2 if tool_cost else 0,
        "tool_cost": tool_cost,
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield database_url(None, tmp_path)
        return
    url = fresh_postgres_database()
    try:
        yield database_url(url, tmp_path)
    finally:
        drop_postgres_database(url)


def test_driver_batches_store_what_a_core_insert_stores(db_url: str) -> None:
    async def scenario() -> None:
        db = Database(db_url)
        await db.migrate()
        try:
            async with db.session() as session, session.begin():
                session.add(Account(id="acct_l", name="l"))
            ledger = Ledger(db)
            cases = [
                dict(cost=1_234_567_891, streamed=True, ttft=45.6, tool_cost=10_000_001),  # $1.234567891
                dict(cost=1, streamed=False, ttft=None),  # one nano-dollar
                dict(cost=0, streamed=False, ttft=0.0),
            ]
            ours = [_generation(f"gen-ours-{i}", **case) for i, case in enumerate(cases)]  # type: ignore[arg-type]
            core = [_generation(f"gen-core-{i}", **case) for i, case in enumerate(cases)]  # type: ignore[arg-type]
            charges = [charge_row(g["id"], "acct_l", "k" * 64, g["cost"]) for g in ours if g["cost"]]
            await ledger.write(ours, charges)
            await ledger.write(ours, charges)  # a replayed journal: nothing doubles
            async with db.engine.begin() as connection:
                await connection.execute(
                    insert(GenerationRecord.__table__),
                    [
                        {
                            **g,
                            "cost": Decimal(g["cost"]) / NANO,
                            "tool_cost": Decimal(g["tool_cost"]) / NANO,
                            "created_at": datetime.fromtimestamp(g["created_at"], UTC),
                        }
                        for g in core
                    ],
                )
                await connection.execute(
                    insert(LedgerEntry.__table__),
                    [
                        {
                            **charge_row(g["id"], "acct_l", "k" * 64, g["cost"]),
                            "amount": Decimal(g["cost"]) / NANO,
                        }
                        for g in core
                        if g["cost"]
                    ],
                )
                raw = {
                    row[0]: row[1:]
                    for row in (await connection.execute(text("SELECT * FROM generations"))).all()
                }
                entries = {
                    row[0]: row[1:-1]  # created_at is the server's clock
                    for row in (
                        await connection.execute(
                            text(
                                "SELECT id, account_id, kind, amount, key_hash, reference FROM ledger_entries"
                            )
                        )
                    ).all()
                }
            assert len(raw) == 6 and len(entries) == 4
            for i in range(len(cases)):
                assert raw[f"gen-ours-{i}"] == raw[f"gen-core-{i}"]
            for i in (0, 1):
                ours_entry, core_entry = entries[f"charge_gen-ours-{i}"], entries[f"charge_gen-core-{i}"]
                assert ours_entry[:4] == core_entry[:4]  # all but the reference, which names the generation
            async with db.session() as session:
                stored = (await session.scalars(select(GenerationRecord).order_by(GenerationRecord.id))).all()
            by_id = {g.id: g for g in stored}
            assert by_id["gen-ours-0"].cost == Decimal("1.234567891")
            assert by_id["gen-ours-1"].cost == Decimal("0.000000001")
            assert by_id["gen-ours-0"].streamed is True and by_id["gen-ours-1"].streamed is False
            assert by_id["gen-ours-0"].created_at.timestamp() == pytest.approx(1795436120.123456, abs=1e-6)
            totals = await ledger.totals("acct_l")
            assert totals.charged == 2 * (1_234_567_891 + 1)  # ours and core, each charge once
        finally:
            await db.close()

    asyncio.run(scenario())


def test_journal_rows_written_twice_count_once_under_load(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = Database(database_url(None, tmp_path))
        await db.migrate()
        try:
            async with db.session() as session, session.begin():
                session.add(Account(id="acct_l", name="l"))
            ledger = Ledger(db)
            rows = [_generation(f"gen-{i}", cost=1000 + i, streamed=False, ttft=1.0) for i in range(500)]
            charges = [charge_row(g["id"], "acct_l", None, g["cost"]) for g in rows]
            # Two batches at once, overlapping: neither fails on a locked database, and overlap counts once.
            await asyncio.gather(ledger.write(rows[:300], charges[:300]), ledger.write(rows, charges))
            assert (await ledger.totals("acct_l")).charged == sum(1000 + i for i in range(500))
        finally:
            await db.close()

    asyncio.run(scenario())


def test_usage_buckets_count_a_replayed_batch_once(db_url: str) -> None:
    """A batch written, then sent again (a replayed journal, a retry after a commit the writer never
    heard of) adds to the usage buckets once; the rebuild from the records agrees."""

    async def scenario() -> None:
        from kimi_gateway.stats import rollups
        from kimi_gateway.storage.models import UsageBucket

        db = Database(db_url)
        await db.migrate()
        try:
            ledger = Ledger(db)
            batch = [
                _generation(f"gen-r-{i}", cost=1000 * (i + 1), streamed=False, ttft=10.5) for i in range(3)
            ]
            await ledger.write(batch, [], new=True)
            await ledger.write(batch, [])  # sent again: already written, not counted again
            await ledger.write([_generation("gen-r-9", cost=5, streamed=True, ttft=None)], [])

            async def buckets() -> list[tuple[Any, ...]]:
                async with db.session() as session:
                    rows = (
                        await session.execute(select(UsageBucket).order_by(UsageBucket.granularity))
                    ).scalars()
                    return [
                        (r.granularity, r.requests, r.cost_nano, r.prompt_tokens, r.ttft_count) for r in rows
                    ]

            incremental = await buckets()
            assert incremental == [("d", 4, 6005, 4 * 1234, 3), ("h", 4, 6005, 4 * 1234, 3)]
            await rollups.rebuild(db, datetime(2020, 1, 1, tzinfo=UTC))
            assert await buckets() == incremental
        finally:
            await db.close()

    asyncio.run(scenario())
