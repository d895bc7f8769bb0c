"""What every limiter backend answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

WINDOW_MS = 60_000


@dataclass(frozen=True, slots=True)
class Window:
    """A requests-per-minute limit on one bucket (an account, or a key with its own RPM)."""

    bucket: str
    rpm: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str  # "rpm" or "concurrency": which limit answered
    limit: int
    remaining: int
    reset_ms: int  # epoch milliseconds when a request will next be admitted

    def retry_after(self, now_ms: int) -> int:
        return max(1, -(-(self.reset_ms - now_ms) // 1000))


class Limiter(Protocol):
    async def acquire(
        self, slot: str, concurrency_bucket: str, concurrency: int, windows: Sequence[Window]
    ) -> Decision:
        """Take a concurrency slot and count one request in every window, or none of it."""
        ...

    def release(self, slot: str, concurrency_bucket: str) -> None:
        """Free the slot; synchronous, so a request's end never waits on it."""
        ...

    async def close(self) -> None: ...
