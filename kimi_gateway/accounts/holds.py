"""Credit holds: the worst case of each running request, set against what its account and key have left.

Two backends with one interface. `MemoryHolds` serves one instance: it adds its own not-yet-written charges
to the ledger's (slightly stale) sums. `RedisHolds` (accounts/holds_redis.py) keeps the live balance in
Redis so that every replica sees every other's holds and charges at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from kimi_gateway.accounts.ledger import Ledger


@dataclass(frozen=True, slots=True)
class HoldRequest:
    hold_id: str
    account_id: str
    key_hash: str | None
    amount: int  # nano-dollars
    key_limit: int | None  # nano-dollars, the key's own credit limit


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Why a hold was refused: what was left (nano-dollars), and whose limit it was."""

    available: int
    by: str  # "account" or "key"


class Holds(Protocol):
    """What the accountant and the recorder need of a backend: settling, and news of credits and writes."""

    async def settle(self, hold_id: str, account_id: str, key_hash: str | None, cost: int) -> None:
        """Close a hold at its real cost (0 releases it). Closing one twice changes nothing."""
        ...

    async def credited(self, account_id: str, amount: int) -> None:
        """A recharge or voucher was written to the ledger."""
        ...

    def flushed(self, charges: list[tuple[str, str | None, int]]) -> None:
        """These (account, key, cost) charges are now in the ledger."""
        ...

    async def close(self) -> None: ...


class ReservingHolds(Holds, Protocol):
    """A backend that places holds itself (with Redis, the admission script does: accounts/admission.py)."""

    async def reserve(self, request: HoldRequest) -> Shortfall | None: ...

    def top_up(self, request: HoldRequest) -> Shortfall | None: ...

    def settle_now(self, hold_id: str, account_id: str, key_hash: str | None, cost: int) -> None:
        """`settle`, for a backend whose holds live in this process and so never wait."""
        ...


@dataclass(slots=True)
class _Sum:
    """One ledger sum as this process knows it: the database's figure plus what it has not yet written."""

    stored: int | None = None
    loaded_at: float = 0.0
    # Bumped when a flush moves charges from `unwritten` into `stored`: a load begun before the flush may
    # or may not include them, so its figure is dropped (the adjusted one is exact).
    epoch: int = 0
    unwritten: int = 0
    held: int = 0
    loading: asyncio.Future[None] | None = None  # one load at a time, however many requests wait on it


def _entry(sums: dict[str, _Sum], name: str) -> _Sum:
    # Not setdefault: it would build a throwaway _Sum on every request.
    entry = sums.get(name)
    if entry is None:
        entry = sums[name] = _Sum()
    return entry


def _take(account: _Sum, key: _Sum | None, amount: int, key_limit: int | None) -> Shortfall | None:
    """Hold `amount` against the account (and the key's own limit), or say what was left instead."""
    available = (account.stored or 0) - account.unwritten - account.held
    if available < 0 or amount > available:
        return Shortfall(available, "account")
    if key is not None and key_limit is not None:
        left = key_limit - (key.stored or 0) - key.unwritten - key.held
        if amount > left:
            return Shortfall(left, "key")
        key.held += amount
    account.held += amount
    return None


@dataclass(slots=True)
class MemoryHolds:
    ledger: Ledger
    refresh_seconds: float = 5.0  # recharges made by another process show up within this
    # While the database is away, a figure this much past its refresh is still used (then: refused).
    grace_seconds: float = 30.0
    _accounts: dict[str, _Sum] = field(default_factory=dict)
    _keys: dict[str, _Sum] = field(default_factory=dict)
    _open: dict[str, tuple[str, str | None, int]] = field(default_factory=dict)

    async def _stored(self, entry: _Sum, load: Callable[[str], Awaitable[int]], name: str) -> None:
        while entry.stored is None or time.monotonic() - entry.loaded_at > self.refresh_seconds:
            if entry.loading is not None:
                await asyncio.shield(entry.loading)
                continue
            entry.loading = asyncio.get_running_loop().create_future()
            try:
                epoch = entry.epoch
                try:
                    value = await load(name)
                except Exception:
                    age = time.monotonic() - entry.loaded_at
                    if entry.stored is None or age > self.refresh_seconds + self.grace_seconds:
                        raise
                    return  # the database is away: this process's own figure, still within its grace
                if entry.epoch == epoch:
                    entry.stored = value
                if entry.stored is not None:
                    entry.loaded_at = time.monotonic()
            finally:
                entry.loading.set_result(None)
                entry.loading = None

    async def _balance(self, account_id: str) -> int:
        return (await self.ledger.totals(account_id)).balance

    async def reserve(self, request: HoldRequest) -> Shortfall | None:
        account = _entry(self._accounts, request.account_id)
        key: _Sum | None = None
        if request.key_hash is not None and request.key_limit is not None:
            key = _entry(self._keys, request.key_hash)

        # A flush may make a figure stale while the other loads; go round until both are current.
        while True:
            await self._stored(account, self._balance, request.account_id)
            if key is not None:
                await self._stored(key, self.ledger.key_usage, request.key_hash or "")
            if account.stored is not None and (key is None or key.stored is not None):
                break
        # No await from here on: the check and the hold happen as one step.
        short = _take(account, key, request.amount, request.key_limit)
        if short is None:
            self._open[request.hold_id] = (
                request.account_id,
                request.key_hash if key else None,
                request.amount,
            )
        return short

    def top_up(self, request: HoldRequest) -> Shortfall | None:
        """Add `request.amount` to the open hold `request.hold_id`, if it fits (the figures were loaded
        when the hold was placed: no await, so the check and the addition are one step)."""
        opened = self._open.get(request.hold_id)
        if opened is None:
            return None  # settled meanwhile
        account_id, held_key, amount = opened
        key = _entry(self._keys, held_key) if held_key is not None else None
        short = _take(_entry(self._accounts, account_id), key, request.amount, request.key_limit)
        if short is None:
            self._open[request.hold_id] = (account_id, held_key, amount + request.amount)
        return short

    async def settle(self, hold_id: str, account_id: str, key_hash: str | None, cost: int) -> None:
        self.settle_now(hold_id, account_id, key_hash, cost)

    def settle_now(self, hold_id: str, account_id: str, key_hash: str | None, cost: int) -> None:
        opened = self._open.pop(hold_id, None)
        if opened is None:
            return
        _, held_key, amount = opened
        account = _entry(self._accounts, account_id)
        account.held -= amount
        account.unwritten += cost
        # Every charged key gets an entry, so that `flushed` later takes back exactly what was added here.
        key = _entry(self._keys, key_hash) if key_hash is not None else None
        if key is not None:
            key.unwritten += cost
            if held_key is not None:
                key.held -= amount

    async def credited(self, account_id: str, amount: int) -> None:
        self._stale(self._accounts.get(account_id))

    def flushed(self, charges: list[tuple[str, str | None, int]]) -> None:
        # The charges move from "not yet written" into the stored sums (a balance falls, a key's usage
        # rises); no reload needed.
        for account_id, key_hash, cost in charges:
            for entry, sign in ((self._accounts.get(account_id), -1), (self._keys.get(key_hash or ""), 1)):
                if entry is not None:
                    entry.unwritten -= cost
                    if entry.stored is not None:
                        entry.stored += sign * cost
                    entry.epoch += 1

    @staticmethod
    def _stale(entry: _Sum | None) -> None:
        if entry is not None:
            entry.stored = None
            entry.epoch += 1

    async def close(self) -> None:
        return None
