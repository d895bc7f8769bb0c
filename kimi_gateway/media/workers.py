"""Where CPU-heavy media work runs: a small pool of its own, bounded three ways.

- Threads: a fixed few, apart from asyncio's default executor, so media work never takes the threads that
  file reads and the database driver need, and never more than these cores at once.
- Per account: one tenant's uploads queue behind each other, not in front of everyone else's.
- Per job: a `Budget` of CPU seconds (the worker thread's own `thread_time`) and of wall time, which the
  work checks as it goes and which a cancelled request trips at once; the job then stops where it is.
- Decoding: images are admitted by megapixels, so that a burst of huge (but legal) images cannot decode
  all at once and exhaust memory.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class OverBudget(Exception):
    """A media job ran out of its CPU or time budget, or its request went away."""


class Budget:
    """Checked by the job itself, often (every few thousand operations): cheap, and thread-safe."""

    __slots__ = ("_cancelled", "_cpu_limit", "_cpu_start", "_wall_deadline", "seconds")

    def __init__(self, seconds: float, cancelled: threading.Event | None = None) -> None:
        self.seconds = seconds
        self._cancelled = cancelled or threading.Event()
        self._cpu_start: float | None = None
        self._cpu_limit = seconds
        # Wall time too: a job starved of CPU by others must still end.
        self._wall_deadline = time.monotonic() + 3 * seconds

    def start(self) -> None:
        """Called in the worker thread, as the job starts: CPU time is counted per thread."""
        self._cpu_start = time.thread_time()
        self._wall_deadline = time.monotonic() + 3 * self.seconds

    def check(self) -> None:
        if self._cancelled.is_set():
            raise OverBudget("the request was cancelled")
        start = self._cpu_start
        if start is not None and time.thread_time() - start > self._cpu_limit:
            raise OverBudget(f"it needs more than {self.seconds:g} s of processing")
        if time.monotonic() > self._wall_deadline:
            raise OverBudget(f"it took longer than {3 * self.seconds:g} s")


UNLIMITED = Budget(float("inf"))

_libc_name = ctypes.util.find_library("c")
_malloc_trim = getattr(ctypes.CDLL(_libc_name), "malloc_trim", None) if _libc_name else None


def trim_memory() -> None:
    """Give the heap's free pages back to the system (glibc keeps them otherwise: a few huge decodes
    would leave the process hundreds of MB larger for good). Called after large media jobs only."""
    if _malloc_trim is not None:
        _malloc_trim(0)


class MediaPool:
    def __init__(self, workers: int, per_account: int, budget_seconds: float, megapixels: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="media")
        self.per_account = per_account
        self.budget_seconds = budget_seconds
        self._accounts: dict[str | None, asyncio.Semaphore] = {}
        self._megapixels = megapixels
        self._pixels_free = megapixels
        self._pixels_changed: asyncio.Condition | None = None

    def budget(self) -> Budget:
        return Budget(self.budget_seconds)

    async def run(self, account: str | None, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args)` in the pool, queued behind this account's other media work."""
        gate = self._accounts.get(account)
        if gate is None:
            gate = self._accounts[account] = asyncio.Semaphore(self.per_account)
        async with gate:
            try:
                return await asyncio.get_running_loop().run_in_executor(
                    self._executor, lambda: fn(*args, **kwargs)
                )
            finally:
                if not gate.locked() and len(self._accounts) > 1000:
                    self._accounts.pop(account, None)  # idle tenants' gates don't pile up

    async def budgeted(self, account: str | None, fn: Callable[[Budget], T]) -> T:
        """`fn(budget)` in the pool; if the caller is cancelled, the budget trips and the job stops."""
        cancelled = threading.Event()
        budget = Budget(self.budget_seconds, cancelled)

        def job() -> T:
            budget.start()
            return fn(budget)

        try:
            return await self.run(account, job)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @asynccontextmanager
    async def pixels(self, count: int) -> AsyncIterator[None]:
        """Hold `count` pixels of the decoding allowance while decoding (one image may always go alone)."""
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
