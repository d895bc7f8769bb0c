"""Generation records and charges, written to the database in batches, off the request path, durably.

Every hold and every settlement goes to the journal first (group-committed: one `write()` per turn of the
event loop), then waits in memory for the next batch. A graceful shutdown writes what is waiting; after a
crash, `recover` replays the dead process's journal: settled requests are written (charge ids make a
replay count once), and holds left open are released and recorded as interrupted, charging nothing.

A batch the database refuses (a value too long for PostgreSQL, say) is written row by row, and what is
still refused is set aside in `data_dir/dead-letter/` with an error log line: one bad row never blocks the
records and charges of every other request. Journal records carry a version (`v`), so a journal written
by an older release replays after an upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from kimi_gateway.accounts.holds import Holds
from kimi_gateway.accounts.journal import Journal, read_folder
from kimi_gateway.accounts.ledger import Ledger, charge_row, refused_rows
from kimi_gateway.stats.metrics import Metrics
from kimi_gateway.storage.models import GenerationRecord
from kimi_gateway.storage.rows import GenerationRow

log = logging.getLogger(__name__)

# The journal's record format. 0: before versions (no `v`); 1: `v` on every record.
JOURNAL_VERSION = 1
_NUMBERS = ("cost", "tool_calls", "tool_cost")
_GENERATION_DEFAULTS: dict[str, Any] = {
    column.name: 0 if column.name.endswith("_tokens") or column.name in _NUMBERS else None
    for column in GenerationRecord.__table__.columns
}
_GENERATION_DEFAULTS["streamed"] = False


class Recorder:
    def __init__(
        self, ledger: Ledger, holds: Holds, journal_root: Path, interval: float = 0.25, max_batch: int = 1000
    ) -> None:
        self.ledger = ledger
        self.holds = holds
        self.journal_root = journal_root
        self.interval = interval
        self.max_batch = max_batch
        self.journal: Journal | None = None
        self._open: dict[str, dict[str, Any]] = {}
        self._generations: dict[str, GenerationRow] = {}
        self._charges: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.dead_letter = journal_root.parent / "dead-letter"
        self.dead_letters = 0  # rows set aside since start
        self.metrics: Metrics | None = None
        self._attempted: set[str] = set()  # ids of records a failed write sent (it may have committed)

    async def start(self) -> None:
        self.journal = Journal(self.journal_root)
        await self.recover()
        self._task = asyncio.create_task(self._run())

    def opened(self, hold: dict[str, Any]) -> None:
        assert self.journal is not None
        self.journal.append({"op": "hold", "v": JOURNAL_VERSION, **hold})
        self._open[hold["id"]] = hold

    def closed(
        self, generation: GenerationRow, cost: int, steps: Sequence[GenerationRow] = ()
    ) -> dict[str, Any] | None:
        """Journal the outcome and queue it; returns the charge, or None when nothing is owed. `steps`:
        the records of a tool loop's later model calls, in the same journal record (one charge for all)."""
        assert self.journal is not None
        charge = None
        if cost > 0 and generation["account_id"] is not None:
            charge = charge_row(generation["id"], generation["account_id"], generation["key_hash"], cost)
        record: dict[str, Any] = {
            "op": "close",
            "v": JOURNAL_VERSION,
            "id": generation["id"],
            "generation": generation,
            "charge": charge,
        }
        if steps:
            record["steps"] = list(steps)
        self.journal.append(record)
        self._open.pop(generation["id"], None)
        for step in steps:
            self._generations[step["id"]] = step
        self._queue(generation, charge)
        return charge

    def after_journaled(self, callback: Callable[[], None]) -> None:
        """Call `callback` once what `opened` and `closed` recorded so far is in the journal file."""
        assert self.journal is not None
        self.journal.after_write(callback)

    def journal_now(self) -> None:
        """Write what waits for the end of this turn at once (shutdown)."""
        if self.journal is not None:
            self.journal.write_pending()

    def pending(self, generation_id: str) -> GenerationRow | None:
        return self._generations.get(generation_id)

    def _queue(self, generation: GenerationRow, charge: dict[str, Any] | None) -> None:
        self._generations[generation["id"]] = generation
        if charge is not None:
            self._charges.append(charge)
        if len(self._generations) >= self.max_batch:
            self._wake.set()

    async def _run(self) -> None:
        wait = self.interval
        failing = False
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                # The database is away; the rows wait in memory and in the journal for the next round,
                # tried again less and less often (up to every 5 s), with one log line per outage.
                if not failing:
                    log.error(
                        "writing generation records failed; retrying until the database is back: %s", exc
                    )
                failing = True
                wait = min(wait * 2, 5.0)
                continue
            if failing:
                log.warning("the database is back: waiting generation records written")
            failing, wait = False, self.interval

    async def flush(self) -> None:
        async with self._lock:
            if not self._generations or self.journal is None:
                return
            old = self.journal.rotate()
            for hold in self._open.values():
                self.journal.append({"op": "hold", "v": JOURNAL_VERSION, **hold})
            generations, charges = list(self._generations.values()), self._charges
            self._generations, self._charges = {}, []
            # A batch none of whose records was ever sent cannot have been written in part already.
            new = not self._attempted or not any(g["id"] in self._attempted for g in generations)
            try:
                await self.write(generations, charges, new=new)
            except BaseException:
                self._attempted.update(g["id"] for g in generations)
                if self.metrics is not None:
                    self.metrics.batch(len(generations), written=False)
                for generation in generations:
                    self._generations.setdefault(generation["id"], generation)
                self._charges = charges + self._charges
                raise
            if self._attempted:
                self._attempted.difference_update(g["id"] for g in generations)
            if self.metrics is not None:
                self.metrics.batch(len(generations), written=True)
            for path in old:
                path.unlink(missing_ok=True)
            self.holds.flushed([(c["account_id"], c["key_hash"], c["amount"]) for c in charges])

    async def write(
        self, generations: list[GenerationRow], charges: list[dict[str, Any]], new: bool = False
    ) -> None:
        """The batch in one transaction; if the database refuses its rows, row by row, setting aside
        what it still refuses. Raises only when the database is away (the caller keeps the batch)."""
        try:
            await self.ledger.write(generations, charges, new=new)
        except Exception as exc:
            if not refused_rows(exc):
                raise
            log.warning("a batch of %d record(s) was refused; writing it row by row", len(generations))
            rejected = await self.ledger.write_apart(generations, charges)
            if rejected:
                self._set_aside(rejected)

    def _set_aside(self, rejected: list[dict[str, Any]]) -> None:
        self.dead_letters += len(rejected)
        self.dead_letter.mkdir(parents=True, exist_ok=True)
        path = self.dead_letter / f"{time.strftime('%Y%m%d')}.jsonl"
        with path.open("ab") as out:
            for item in rejected:
                out.write(orjson.dumps({"at": time.time(), **item}) + b"\n")
        for item in rejected:
            log.error(
                "a %s row was refused by the database and set aside in %s: %s",
                item["table"],
                path,
                item["error"],
                extra={"fields": {"row_id": item["row"].get("id"), "metric": "dead_letter"}},
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()
        if self.journal is not None:
            # Holds still open here belong to requests that never finished; a clean stop releases them.
            for hold in list(self._open.values()):
                await self._release(hold)
            await self.flush()
            self.journal.close(remove=not self._generations)

    async def recover(self) -> None:
        assert self.journal is not None
        for folder in self.journal.orphans():
            try:
                await self._replay(folder)
            except ValueError as exc:  # written by a newer release: keep it for that release, start anyway
                self.dead_letter.mkdir(parents=True, exist_ok=True)
                kept = self.dead_letter / f"journal-{folder.name}"
                shutil.move(folder, kept)
                log.error("journal %s cannot be replayed (%s); moved to %s", folder.name, exc, kept)

    async def _replay(self, folder: Path) -> None:
        holds: dict[str, dict[str, Any]] = {}
        closes: dict[str, dict[str, Any]] = {}
        for record in map(upgrade, read_folder(folder)):
            if record.get("op") == "hold":
                holds[record["id"]] = record
            elif record.get("op") == "close":
                closes[record["id"]] = record
        generations = [g for c in closes.values() for g in (c["generation"], *c.get("steps", ()))]
        charges = [c["charge"] for c in closes.values() if c.get("charge")]
        for close in closes.values():
            gen = close["generation"]
            hold = holds.get(close["id"])
            if hold is not None:
                await self.holds.settle(close["id"], gen["account_id"], gen["key_hash"], _cost(close))
        released = [h for hid, h in holds.items() if hid not in closes]
        for hold in released:
            await self.holds.settle(hold["id"], hold["account_id"], hold["key_hash"], 0)
            generations.append(interrupted(hold))
        await self.write(generations, charges)
        log.warning(
            "recovered journal %s: %d settled request(s) written, %d open hold(s) released",
            folder.name,
            len(closes),
            len(released),
        )
        shutil.rmtree(folder, ignore_errors=True)

    async def _release(self, hold: dict[str, Any]) -> None:
        await self.holds.settle(hold["id"], hold["account_id"], hold["key_hash"], 0)
        self.closed(interrupted(hold), 0)


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """A journal record in this release's shape, whichever release wrote it."""
    version = record.get("v", 0)
    if version > JOURNAL_VERSION:
        raise ValueError(f"journal record version {version} is newer than this release's")
    if record.get("op") == "close":
        # Columns added since the record was written get their defaults; ones since removed are ignored.
        record["generation"] = {**_GENERATION_DEFAULTS, **record["generation"]}
        if "steps" in record:
            record["steps"] = [{**_GENERATION_DEFAULTS, **step} for step in record["steps"]]
    return record


def _cost(close: dict[str, Any]) -> int:
    charge = close.get("charge")
    return int(charge["amount"]) if charge else 0


def interrupted(hold: dict[str, Any]) -> GenerationRow:
    """The record of a request whose process stopped before it finished: failed, so charged nothing."""
    return {
        "id": hold["id"],
        "account_id": hold["account_id"],
        "key_hash": hold["key_hash"],
        "model": hold["model"],
        "provider": None,
        "status": "interrupted",
        "finish_reason": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "cost": 0,
        "latency_ms": None,
        "ttft_ms": None,
        "app_referer": hold.get("app_referer"),
        "app_title": hold.get("app_title"),
        "streamed": hold.get("streamed", False),
        "created_at": hold.get("created_at", time.time()),
        "request_id": None,
        "tool_calls": 0,
        "tool_cost": 0,
    }
