"""Endpoint uptime that lasts: five-minute buckets of outcomes per provider x model, in the database, so
every replica, and a restarted one, reads the same figures. OpenRouter's definition: successes / (successes
+ errors); rate-limited answers and the client's own mistakes are not errors (routing/health.py decides
what counts). Each process adds its outcomes with upserts (`x = x + excluded.x`), every `interval`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import delete, select

from kimi_gateway.stats import rollups
from kimi_gateway.stats.endpoints import COARSE, EndpointStats
from kimi_gateway.storage.db import Database, utc
from kimi_gateway.storage.models import UptimeBucket

log = logging.getLogger(__name__)
KEEP = timedelta(days=8)
_PURGE_EVERY = 3600.0


@dataclass(frozen=True, slots=True)
class Outcomes:
    successes: int = 0
    errors: int = 0
    rate_limited: int = 0

    @property
    def uptime(self) -> float | None:
        counted = self.successes + self.errors
        return round(100.0 * self.successes / counted, 2) if counted else None


@cache
def _upsert(postgres: bool) -> str:
    marks = ", ".join(f"${i}" if postgres else "?" for i in range(1, 7))
    return (
        "INSERT INTO uptime_buckets (start, provider, model, successes, errors, rate_limited) "
        f"VALUES ({marks}) ON CONFLICT (start, provider, model) DO UPDATE SET "
        "successes = uptime_buckets.successes + excluded.successes, "
        "errors = uptime_buckets.errors + excluded.errors, "
        "rate_limited = uptime_buckets.rate_limited + excluded.rate_limited"
    )


def _when(epoch: float, postgres: bool) -> object:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment if postgres else moment.strftime("%Y-%m-%d %H:%M:%S.%f")


class UptimeStore:
    def __init__(self, db: Database, stats: EndpointStats, interval: float = 1.0) -> None:
        self.db = db
        self.stats = stats
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._purged = 0.0
        # Outcomes being written right now, and how many writes have ended: a reader pairs what memory
        # holds with what the database holds as of one write, never counting a bucket twice or not at all.
        self._in_flight: dict[tuple[int, str, str], list[int]] = {}
        self._writes = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
                if time.monotonic() - self._purged > _PURGE_EVERY:
                    self._purged = time.monotonic()
                    await self.purge()
            except Exception as exc:  # the database is away: the counts wait for the next round
                log.warning("uptime figures could not be written yet: %s", exc)

    async def flush(self) -> None:
        taken = self.stats.take()
        if not taken:
            return
        postgres = self.db.dialect == "postgresql"
        rows = [(_when(k[0], postgres), k[1], k[2], *taken[k]) for k in sorted(taken)]
        self._in_flight = taken
        try:
            async with self.db.engine.begin() as connection:
                await connection.exec_driver_sql(_upsert(postgres), rows)
        except BaseException:
            for key, counts in taken.items():  # put them back, added to what came meanwhile
                kept = self.stats.unsaved.setdefault(key, [0, 0, 0])
                for i in range(3):
                    kept[i] += counts[i]
            raise
        finally:
            self._in_flight = {}
            self._writes += 1

    async def _read(
        self, query: Any
    ) -> tuple[list[UptimeBucket], list[tuple[tuple[int, str, str], list[int]]]]:
        """The buckets the query finds, and the outcomes only memory holds, as of the same moment."""
        for _ in range(5):
            writes = self._writes
            memory = [(k, list(v)) for k, v in (*self.stats.unsaved.items(), *self._in_flight.items())]
            async with self.db.session() as session:
                rows = list((await session.execute(query)).scalars())
            if writes == self._writes:  # no write ended while the database was read
                return rows, memory
        return rows, memory  # writes kept ending meanwhile: figures off by one write at most

    async def purge(self) -> None:
        async with self.db.engine.begin() as connection:
            await connection.execute(
                delete(UptimeBucket).where(UptimeBucket.start < datetime.now(UTC) - KEEP)
            )
        await rollups.purge(self.db)

    async def outcomes(self, model: str, seconds: float) -> dict[str, Outcomes]:
        """Per provider, the outcomes of the buckets overlapping the last `seconds`, with this process's
        not yet written."""
        since = time.time() - seconds
        first = since - since % COARSE
        query = select(UptimeBucket).where(
            UptimeBucket.model == model, UptimeBucket.start >= datetime.fromtimestamp(first, UTC)
        )
        rows, memory = await self._read(query)
        totals: dict[str, list[int]] = {}
        for row in rows:
            counts = totals.setdefault(row.provider, [0, 0, 0])
            counts[0] += row.successes
            counts[1] += row.errors
            counts[2] += row.rate_limited
        for (start, provider, unsaved_model), unsaved in memory:
            if unsaved_model == model and start >= first:
                kept = totals.setdefault(provider, [0, 0, 0])
                for i in range(3):
                    kept[i] += unsaved[i]
        return {provider: Outcomes(*counts) for provider, counts in totals.items()}

    async def series(self, model: str, since: datetime, step: int) -> dict[str, list[tuple[int, Outcomes]]]:
        """Per provider, outcomes per `step` seconds from `since` (for a model page's uptime chart), with
        this process's not yet written."""
        query = select(UptimeBucket).where(UptimeBucket.model == model, UptimeBucket.start >= since)
        rows, memory = await self._read(query)
        found = [
            (
                utc(row.start),
                row.provider,
                (row.successes, row.errors, row.rate_limited),
            )
            for row in rows
        ]
        found += [
            (datetime.fromtimestamp(start, UTC), provider, (counts[0], counts[1], counts[2]))
            for (start, provider, unsaved_model), counts in memory
            if unsaved_model == model and start >= since.timestamp()
        ]
        points: dict[str, dict[int, list[int]]] = {}
        for start, provider, outcome in found:
            at = int(start.timestamp() // step * step)
            counts = points.setdefault(provider, {}).setdefault(at, [0, 0, 0])
            for i in range(3):
                counts[i] += outcome[i]
        return {
            provider: [(at, Outcomes(*c)) for at, c in sorted(by_time.items())]
            for provider, by_time in points.items()
        }
