"""The credit ledger: append-only entries, balances derived from them, and idempotent batch writes.

Recharges and vouchers add credit; charges take it away. Charges draw on vouchers first, so a voucher
balance never goes negative while the cash balance may (a request is charged after it ends).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError

from kimi_gateway.money import NANO, nano
from kimi_gateway.stats import rollups
from kimi_gateway.storage import Database
from kimi_gateway.storage.models import Account, GenerationRecord, LedgerEntry
from kimi_gateway.storage.rows import GenerationRow

RECHARGE, VOUCHER, CHARGE = "recharge", "voucher", "charge"
CREDIT_KINDS = (RECHARGE, VOUCHER)


class UnknownAccount(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Totals:
    """Nano-dollars, summed over one account's ledger."""

    recharged: int = 0
    vouchers: int = 0
    charged: int = 0

    @property
    def balance(self) -> int:
        return self.recharged + self.vouchers - self.charged

    @property
    def voucher_balance(self) -> int:
        return max(0, self.vouchers - self.charged)

    @property
    def cash_balance(self) -> int:
        return self.balance - self.voucher_balance


def charge_id(generation_id: str) -> str:
    # Derived from the generation, so writing the same charge twice (a replayed journal) counts once.
    return "charge_" + generation_id


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _amount(value: Decimal | None) -> int:
    return nano(value) if value is not None else 0


class Ledger:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def totals(self, account_id: str) -> Totals:
        query = (
            select(LedgerEntry.kind, func.sum(LedgerEntry.amount))
            .where(LedgerEntry.account_id == account_id)
            .group_by(LedgerEntry.kind)
        )
        async with self.db.session() as session:
            sums = {kind: _amount(total) for kind, total in (await session.execute(query)).all()}
        return Totals(sums.get(RECHARGE, 0), sums.get(VOUCHER, 0), sums.get(CHARGE, 0))

    async def key_usage(self, key_hash: str) -> int:
        query = select(func.sum(LedgerEntry.amount)).where(
            LedgerEntry.key_hash == key_hash, LedgerEntry.kind == CHARGE
        )
        async with self.db.session() as session:
            return _amount(await session.scalar(query))

    async def credit(self, account_id: str, amount_usd: Decimal, kind: str = RECHARGE, note: str = "") -> str:
        if kind not in CREDIT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(CREDIT_KINDS)}")
        if amount_usd <= 0:
            raise ValueError("amount must be positive")
        entry_id = f"{kind}_{secrets.token_hex(12)}"
        async with self.db.session() as session, session.begin():
            if await session.get(Account, account_id) is None:
                raise UnknownAccount(account_id)
            session.add(
                LedgerEntry(
                    id=entry_id, account_id=account_id, kind=kind, amount=amount_usd, note=note or None
                )
            )
        return entry_id

    async def write(
        self, generations: Sequence[GenerationRow], charges: Sequence[dict[str, Any]], *, new: bool = False
    ) -> None:
        """One transaction for a batch; rows already written (same ids) are skipped, not doubled. `new`:
        the caller knows no record of the batch was ever sent before (a first attempt), so none is
        looked up to keep a replay from counting twice in the usage buckets.

        Rows come as the journal keeps them: amounts in nano-dollars, times in epoch seconds. They go
        straight to the driver's executemany as tuples: a Core insert's per-row parameter processing was
        most of a batch's cost. The values are what a Core insert binds (tests/test_ledger.py checks that
        the stored rows match).
        """
        postgres = self.db.dialect == "postgresql"
        convert = _postgres_values if postgres else _sqlite_values
        generation_rows = [_GENERATION_VALUES(convert(g)) for g in generations]
        charge_rows = [_CHARGE_VALUES(convert(c)) for c in charges]
        async with self.db.engine.begin() as connection:
            if generation_rows:
                # Only records not yet written add to the usage buckets: a replayed journal counts once.
                written: set[str] = set()
                if not new:
                    ids = [g["id"] for g in generations]
                    known = await connection.execute(
                        select(GenerationRecord.id).where(GenerationRecord.id.in_(ids))
                    )
                    written = {row[0] for row in known}
                await connection.exec_driver_sql(_insert(GenerationRecord, postgres), generation_rows)
                await rollups.add(connection, postgres, [g for g in generations if g["id"] not in written])
            if charge_rows:
                await connection.exec_driver_sql(_insert(LedgerEntry, postgres), charge_rows)

    async def write_apart(
        self, generations: Sequence[GenerationRow], charges: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Write a batch the database refused, row by row, so one bad row cannot hold back the others.

        A generation row that is refused as it is goes in again with its text fields cut to their columns'
        lengths; a charge, without its attribution fields (a charge is never dropped for a label). What is
        still refused comes back, tagged with why, for the caller to set aside. A failure that is not about
        the rows (the database went away) is raised: the caller keeps the whole batch for later.
        """
        rejected: list[dict[str, Any]] = []
        for generation in generations:
            for attempt in (generation, cast(GenerationRow, fitted(generation, GenerationRecord))):
                why = await self._write_one([attempt], [])
                if why is None:
                    break
            else:
                rejected.append({"table": "generations", "row": generation, "error": why})
        for charge in charges:
            for entry in (charge, {**charge, "key_hash": None, "reference": None}):
                why = await self._write_one([], [entry])
                if why is None:
                    break
            else:
                rejected.append({"table": "ledger_entries", "row": charge, "error": why})
        return rejected

    async def _write_one(
        self, generations: Sequence[GenerationRow], charges: Sequence[dict[str, Any]]
    ) -> str | None:
        try:
            await self.write(generations, charges)
        except Exception as exc:
            if not refused_rows(exc):
                raise
            return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        return None

    async def generation(self, generation_id: str) -> GenerationRecord | None:
        async with self.db.session() as session:
            return await session.get(GenerationRecord, generation_id)


def refused_rows(exc: BaseException) -> bool:
    """The database refused what was sent (a value too long, of the wrong type, against a constraint), as
    opposed to being unreachable: sending the same rows again would fail again."""
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    if isinstance(exc, DataError | IntegrityError | ProgrammingError):
        return True
    # asyncpg's errors reach SQLAlchemy 2.1 as a generic DBAPIError: read the SQLSTATE class under it
    # (22 data exception, 23 integrity constraint violation, 42 syntax or access rule).
    cause: BaseException | None = exc.orig
    while cause is not None:
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str):
            return state[:2] in ("22", "23", "42")
        cause = cause.__cause__
    return False


def fitted(row: Mapping[str, Any], model: type[GenerationRecord] | type[LedgerEntry]) -> dict[str, Any]:
    """The row with every text value cut to its column's length (SQLite ignores lengths; PostgreSQL
    refuses the whole statement)."""
    out = dict(row)
    for column in model.__table__.columns:
        length = getattr(column.type, "length", None)
        value = out.get(column.name)
        if length and isinstance(value, str) and len(value) > length:
            out[column.name] = value[:length]
    return out


# The journal's rows carry every generation column, and these of a charge.
_GENERATION_COLUMNS = tuple(c.name for c in GenerationRecord.__table__.columns)
_CHARGE_COLUMNS = ("id", "account_id", "kind", "amount", "key_hash", "reference")
_GENERATION_VALUES = itemgetter(*_GENERATION_COLUMNS)
_CHARGE_VALUES = itemgetter(*_CHARGE_COLUMNS)


@cache
def _insert(model: type[GenerationRecord] | type[LedgerEntry], postgres: bool) -> str:
    columns = _GENERATION_COLUMNS if model is GenerationRecord else _CHARGE_COLUMNS
    marks = ", ".join(f"${i}" if postgres else "?" for i in range(1, len(columns) + 1))
    return (
        f"INSERT INTO {model.__tablename__} ({', '.join(columns)}) VALUES ({marks}) "
        "ON CONFLICT (id) DO NOTHING"
    )


_ZERO = Decimal(0)


def _postgres_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """asyncpg binds Decimal, datetime and bool as they are."""
    out = dict(row)
    if "cost" in row:
        out["cost"] = Decimal(row["cost"]) / NANO
        # Most rows ran no server tool: no Decimal division for them.
        out["tool_cost"] = Decimal(row["tool_cost"]) / NANO if row["tool_cost"] else _ZERO
        out["created_at"] = _time(row["created_at"])
    else:
        out["amount"] = Decimal(row["amount"]) / NANO
    return out


def _sqlite_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """What SQLAlchemy's SQLite types bind: Numeric as float, DateTime as its text, bool as 0 or 1."""
    out = dict(row)
    if "cost" in row:
        out["cost"] = float(Decimal(row["cost"]) / NANO)
        out["tool_cost"] = float(Decimal(row["tool_cost"]) / NANO) if row["tool_cost"] else 0.0
        out["created_at"] = _time(row["created_at"]).strftime("%Y-%m-%d %H:%M:%S.%f")
        out["streamed"] = int(bool(row["streamed"]))
    else:
        out["amount"] = float(Decimal(row["amount"]) / NANO)
    return out


def charge_row(generation_id: str, account_id: str, key_hash: str | None, cost: int) -> dict[str, Any]:
    return {
        "id": charge_id(generation_id),
        "account_id": account_id,
        "kind": CHARGE,
        "amount": cost,
        "key_hash": key_hash,
        "reference": generation_id,
    }
