"""The credit ledger: append-only entries, balances derived from them, and idempotent batch writes.

Recharges and vouchers add credit; charges take it away. Charges draw on vouchers first, so a voucher
balance never goes negative while the cash balance may (a request is charged after it ends).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from operator import itemgetter
from typing import Any

from sqlalchemy import func, select

from kimi_gateway.accounts.pricing import NANO, nano
from kimi_gateway.storage import Database
from kimi_gateway.storage.models import Account, Generation, LedgerEntry

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

    async def write(self, generations: Sequence[dict[str, Any]], charges: Sequence[dict[str, Any]]) -> None:
        """One transaction for a batch; rows already written (same ids) are skipped, not doubled.

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
                await connection.exec_driver_sql(_insert(Generation, postgres), generation_rows)
            if charge_rows:
                await connection.exec_driver_sql(_insert(LedgerEntry, postgres), charge_rows)

    async def generation(self, generation_id: str) -> Generation | None:
        async with self.db.session() as session:
            return await session.get(Generation, generation_id)


# The journal's rows carry every generation column, and these of a charge.
_GENERATION_COLUMNS = tuple(c.name for c in Generation.__table__.columns)
_CHARGE_COLUMNS = ("id", "account_id", "kind", "amount", "key_hash", "reference")
_GENERATION_VALUES = itemgetter(*_GENERATION_COLUMNS)
_CHARGE_VALUES = itemgetter(*_CHARGE_COLUMNS)


@cache
def _insert(model: type[Generation] | type[LedgerEntry], postgres: bool) -> str:
    columns = _GENERATION_COLUMNS if model is Generation else _CHARGE_COLUMNS
    marks = ", ".join(f"${i}" if postgres else "?" for i in range(1, len(columns) + 1))
    return (
        f"INSERT INTO {model.__tablename__} ({', '.join(columns)}) VALUES ({marks}) "
        "ON CONFLICT (id) DO NOTHING"
    )


def _postgres_values(row: dict[str, Any]) -> dict[str, Any]:
    """asyncpg binds Decimal, datetime and bool as they are."""
    out = dict(row)
    if "cost" in row:
        out["cost"] = Decimal(row["cost"]) / NANO
        out["created_at"] = _time(row["created_at"])
    else:
        out["amount"] = Decimal(row["amount"]) / NANO
    return out


def _sqlite_values(row: dict[str, Any]) -> dict[str, Any]:
    """What SQLAlchemy's SQLite types bind: Numeric as float, DateTime as its text, bool as 0 or 1."""
    out = dict(row)
    if "cost" in row:
        out["cost"] = float(Decimal(row["cost"]) / NANO)
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
