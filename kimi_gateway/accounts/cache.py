"""A small read-through cache for figures other replicas may change: keys, and accounts' tiers.

Each value has a hard age bound, `ttl`: an entry older than that is never used; the request waits for a
fresh load (concurrent misses share one). A change made elsewhere (a key disabled, a recharge) is therefore
seen within `ttl`, whatever the load. So that a busy key does not make every request wait at each expiry,
the first use after `ttl / 2` starts a reload in the background while the still-valid entry is served:
under steady traffic entries are renewed before they expire and nobody waits.

When the load itself fails (the database is away), an entry at most `stale_grace` seconds past its `ttl`
is still served, and after that the error reaches the caller: an outage never makes a decision unbounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger(__name__)


class RefreshingCache(Generic[K, V]):
    RETRY_SECONDS = 1.0

    def __init__(
        self,
        load: Callable[[K], Awaitable[V]],
        ttl: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        stale_grace: float = 30.0,
    ) -> None:
        self._load = load
        self.ttl = ttl
        self.stale_grace = stale_grace
        self._max = max_entries  # unknown keys are cached too: a flood of them must not grow it forever
        self._clock = clock
        self._entries: dict[K, tuple[V, float]] = {}
        self._loading: dict[K, asyncio.Task[V]] = {}
        self._retry_at: dict[K, float] = {}  # after a failed load, stale entries are served until then

    async def get(self, key: K) -> V:
        entry = self._entries.get(key)
        if entry is not None:
            value, loaded_at = entry
            age = self._clock() - loaded_at
            if age < self.ttl:
                if age >= self.ttl / 2 and key not in self._loading:
                    self._start(key)  # renewed ahead of expiry; this request does not wait
                return value
            retry = self._retry_at.get(key)
            if retry is not None and self._clock() < retry and age < self.ttl + self.stale_grace:
                return value  # the last load failed a moment ago: don't queue every request on another
        task = self._loading.get(key) or self._start(key)
        return await asyncio.shield(task)

    def drop(self, key: K) -> None:
        """Forget a value that changed: the next use loads it afresh."""
        self._entries.pop(key, None)
        self._loading.pop(key, None)  # a load begun before the change must not store what it read

    def clear(self) -> None:
        self._entries.clear()
        self._loading.clear()
        self._retry_at.clear()

    def _start(self, key: K) -> asyncio.Task[V]:
        task = asyncio.get_running_loop().create_task(self._refresh(key))
        self._loading[key] = task
        return task

    async def _refresh(self, key: K) -> V:
        me = asyncio.current_task()
        started = self._clock()
        try:
            value = await self._load(key)
        except Exception:
            if self._loading.get(key) is me:
                del self._loading[key]
            entry = self._entries.get(key)
            if entry is not None and started - entry[1] < self.ttl + self.stale_grace:
                # The database is away: what we had is still within its grace.
                log.warning("refreshing a cached figure failed; serving the previous one", exc_info=True)
                self._retry_at[key] = self._clock() + self.RETRY_SECONDS
                return entry[0]
            self._entries.pop(key, None)
            raise
        self._retry_at.pop(key, None)
        if self._loading.get(key) is me:
            del self._loading[key]
            if len(self._entries) >= self._max and key not in self._entries:
                del self._entries[next(iter(self._entries))]  # the oldest insertion goes
            self._entries[key] = (value, started)  # its age counts from before the read
        return value
