"""A small read-through cache for figures other replicas may change: keys, and accounts' tiers.

A value is loaded on first use and refreshed when it is older than `ttl`. Concurrent misses share one load,
and a stale value goes on being served while its refresh runs in the background: under load, an expiry
would otherwise send every waiting request to the database at once and stall them all behind it.
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
    def __init__(
        self,
        load: Callable[[K], Awaitable[V]],
        ttl: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self.ttl = ttl
        self._max = max_entries  # unknown keys are cached too: a flood of them must not grow it forever
        self._clock = clock
        self._entries: dict[K, tuple[V, float]] = {}
        self._loading: dict[K, asyncio.Task[V]] = {}

    async def get(self, key: K) -> V:
        entry = self._entries.get(key)
        if entry is not None:
            value, loaded_at = entry
            if self._clock() - loaded_at >= self.ttl and key not in self._loading:
                self._start(key)
            return value
        task = self._loading.get(key) or self._start(key)
        return await asyncio.shield(task)

    def drop(self, key: K) -> None:
        """Forget a value this process changed: the next use loads it afresh."""
        self._entries.pop(key, None)
        self._loading.pop(key, None)  # a load begun before the change must not store what it read

    def _start(self, key: K) -> asyncio.Task[V]:
        task = asyncio.get_running_loop().create_task(self._refresh(key))
        self._loading[key] = task
        return task

    async def _refresh(self, key: K) -> V:
        me = asyncio.current_task()
        try:
            value = await self._load(key)
        except Exception:
            if self._loading.get(key) is me:
                del self._loading[key]
            if key in self._entries:
                # A background refresh failed (the database is away): keep serving what we had.
                log.warning("refreshing a cached figure failed; serving the previous one", exc_info=True)
                return self._entries[key][0]
            raise
        if self._loading.get(key) is me:
            del self._loading[key]
            if len(self._entries) >= self._max and key not in self._entries:
                del self._entries[next(iter(self._entries))]  # the oldest insertion goes
            self._entries[key] = (value, self._clock())
        return value
