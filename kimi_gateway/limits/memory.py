"""In-process limits for a single instance: a deque of admission times per window, a set of slots."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from kimi_gateway.limits.base import WINDOW_MS, Decision, Window


class MemoryLimiter:
    def __init__(self) -> None:
        self._windows: dict[str, deque[int]] = {}
        self._slots: dict[str, set[str]] = {}

    async def acquire(
        self, slot: str, concurrency_bucket: str, concurrency: int, windows: Sequence[Window]
    ) -> Decision:
        now = time.time_ns() // 1_000_000
        # Looked up before created: setdefault would build a throwaway set (and deque) every request.
        slots = self._slots.get(concurrency_bucket)
        if slots is None:
            slots = self._slots[concurrency_bucket] = set()
        if len(slots) >= concurrency:
            return Decision(False, "concurrency", concurrency, 0, now + 1000)
        first: Decision | None = None
        admitted: list[deque[int]] = []
        for window in windows:
            times = self._windows.get(window.bucket)
            if times is None:
                times = self._windows[window.bucket] = deque()
            while times and times[0] <= now - WINDOW_MS:
                times.popleft()
            reset = (times[0] if times else now) + WINDOW_MS
            if len(times) >= window.rpm:
                return Decision(False, "rpm", window.rpm, 0, reset)
            admitted.append(times)
            first = first or Decision(True, "rpm", window.rpm, window.rpm - len(times) - 1, reset)
        for times in admitted:
            times.append(now)
        slots.add(slot)
        return first or Decision(True, "concurrency", concurrency, concurrency - len(slots), now)

    def release(self, slot: str, concurrency_bucket: str) -> None:
        slots = self._slots.get(concurrency_bucket)
        if slots is not None:
            slots.discard(slot)

    async def close(self) -> None:
        return None
