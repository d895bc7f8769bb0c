"""Where CPU-heavy media work runs: a small pool of its own, bounded three ways.

- Threads: a fixed few, apart from asyncio's default executor, so media work never takes the threads that
  file reads and the database driver need, and never more than these cores at once.
- Per account: one tenant's uploads queue behind each other, not in front of everyone else's.
- Per request: a `Budget` of CPU seconds (summed over its jobs) and of wall time, which the work checks as
  it goes and which a cancelled request (the client gone) trips at once; its jobs then stop where they are.
- Decoding: images are admitted by megapixels, after their account's turn, so that a burst of huge (but
  legal) images cannot decode all at once and exhaust memory, nor one account hold the allowance.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypeVar

T = TypeVar("T")


class OverBudget(Exception):
    """Media work ran out of its CPU or time budget, or its request went away."""


class Budget:
    """The CPU and wall time some media work may take, checked by the work itself as it goes (often, every
    few thousand operations: cheap, and thread-safe).

    One request's jobs share one budget: CPU seconds are summed over all of them (each counted with its
    worker thread's own `thread_time`, so other tenants' work in other threads is not charged to it), the
    wall clock runs from its first job (a job starved of CPU by others must still end), and `cancelled`,
    set when the request goes away, stops every job at its next check. A budget may have a parent: a
    document keeps its own limit inside its request's.
    """

    __slots__ = ("_local", "_lock", "_spent", "_wall_deadline", "cancelled", "parent", "seconds")

    def __init__(self, seconds: float, parent: Budget | None = None) -> None:
        self.seconds = seconds
        self.parent = parent
        self.cancelled: threading.Event = parent.cancelled if parent is not None else threading.Event()
        self._spent = 0.0  # CPU seconds of the jobs that have ended
        self._lock = threading.Lock()
        self._local = threading.local()  # the running job's start, in its own thread
        self._wall_deadline = math.inf

    def start(self) -> None:
        """Called in the worker thread, as a job starts."""
        self._local.start = time.thread_time()
        if self._wall_deadline == math.inf:
            self._wall_deadline = time.monotonic() + 3 * self.seconds
        if self.parent is not None:
            self.parent.start()

    def stop(self) -> None:
        """Called in the worker thread, as a job ends: its CPU time joins the total."""
        start = getattr(self._local, "start", None)
        if start is not None:
            self._local.start = None
            with self._lock:
                self._spent += time.thread_time() - start
        if self.parent is not None:
            self.parent.stop()

    def spent(self) -> float:
        start = getattr(self._local, "start", None)
        return self._spent + (time.thread_time() - start if start is not None else 0.0)

    def check(self) -> None:
        if self.cancelled.is_set():
            raise OverBudget("the request was cancelled")
        if self.spent() > self.seconds:
            raise OverBudget(f"it needs more than {self.seconds:g} s of processing")
        if time.monotonic() > self._wall_deadline:
            raise OverBudget(f"it took longer than {3 * self.seconds:g} s")
        if self.parent is not None:
            self.parent.check()


UNLIMITED = Budget(math.inf)

_libc_name = ctypes.util.find_library("c")
_malloc_trim = getattr(ctypes.CDLL(_libc_name), "malloc_trim", None) if _libc_name else None


def trim_memory() -> None:
    """Give the heap's free pages back to the system (glibc keeps them otherwise: a few huge decodes
    would leave the process hundreds of MB larger for good). Called after large media jobs only."""
    if _malloc_trim is not None:
        _malloc_trim(0)


class MediaPool:
    def __init__(
        self,
        workers: int,
        per_account: int,
        document_seconds: float,
        request_seconds: float,
        megapixels: int,
    ) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="media")
        self.per_account = per_account
        self.document_seconds = document_seconds
        self.request_seconds = request_seconds
        self._accounts: dict[str | None, asyncio.Semaphore] = {}
        self._megapixels = megapixels
        self._pixels_free = megapixels
        self._pixels_changed: asyncio.Condition | None = None

    def budget(self) -> Budget:
        """A new budget for all of one request's media work."""
        return Budget(self.request_seconds)

    async def run(
        self, account: str | None, fn: Callable[[], T], budget: Budget | None = None, pixels: int = 0
    ) -> T:
        """`fn()` in the pool. Queued behind this account's other media work first, then (an image decode,
        `pixels` > 0) behind the decoding allowance: an account's queued images hold none of it, so one
        tenant's burst of huge images takes at most `per_account` decodes' worth from everyone else.
        Counted against `budget`; if the caller is cancelled, the budget's flag is set and every job of
        the request stops at its next check (a job not yet started never starts)."""
        gate = self._accounts.get(account)
        if gate is None:
            gate = self._accounts[account] = asyncio.Semaphore(self.per_account)
        try:
            async with gate:
                if budget is not None:
                    budget.check()
                async with self._pixels(pixels):
                    work = self._executor.submit(_counted, fn, budget)
                    job = asyncio.wrap_future(work)
                    try:
                        return await asyncio.shield(job)
                    except asyncio.CancelledError:
                        # The account's turn and the pixels stay held until the thread is done: it stops
                        # at its next budget check, or (a decode, OCR) runs to its end. Released at once,
                        # a client leaving and coming back could run more than its share at a time.
                        if budget is not None:
                            budget.cancelled.set()
                        if not work.cancel():  # not started yet: it never starts
                            await asyncio.wait((job,))
                            if not job.cancelled():
                                job.exception()  # retrieved: its OverBudget is expected, not news
                        raise
        except asyncio.CancelledError:
            if budget is not None:
                budget.cancelled.set()
            raise
        finally:
            if not gate.locked() and len(self._accounts) > 1000:
                self._accounts.pop(account, None)  # idle tenants' gates don't pile up

    async def document(self, account: str | None, fn: Callable[[Budget], T], budget: Budget | None) -> T:
        """`fn(budget)` for one document: its own limit (`document_seconds`), within the request's."""
        own = Budget(self.document_seconds, budget)
        return await self.run(account, lambda: fn(own), own)

    @asynccontextmanager
    async def _pixels(self, count: int) -> AsyncIterator[None]:
        """Hold `count` pixels of the decoding allowance (one image may always go alone)."""
        if count <= 0:
            yield
            return
        if self._pixels_changed is None:
            self._pixels_changed = asyncio.Condition()
        wanted = min(max(count // 1_000_000, 1), self._megapixels)
        changed = self._pixels_changed
        async with changed:
            await changed.wait_for(lambda: self._pixels_free >= wanted)
            self._pixels_free -= wanted
        try:
            yield
        finally:
            async with changed:
                self._pixels_free += wanted
                changed.notify_all()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _counted(fn: Callable[[], T], budget: Budget | None) -> T:
    """In the worker thread: `fn()`, its CPU time counted against `budget`."""
    if budget is None:
        return fn()
    budget.start()
    try:
        budget.check()
        return fn()
    finally:
        budget.stop()
