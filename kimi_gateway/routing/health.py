"""Provider health: recent failures, 429 cool-downs, and a circuit breaker.

A provider that fails `failures_to_open` times in a row is skipped for `cooldown` seconds; then one request
is let through as a probe, and its outcome closes or re-opens the circuit.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(slots=True)
class _State:
    consecutive: int = 0
    open_until: float | None = None
    probing: bool = False
    cooldown_until: float = 0.0
    failures: deque[float] = field(default_factory=lambda: deque(maxlen=256))


class ProviderHealth:
    def __init__(
        self,
        *,
        failures_to_open: int,
        cooldown: float,
        failure_window: float,
        max_cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._failures_to_open = failures_to_open
        self._cooldown = cooldown
        self._window = failure_window
        self._max_cooldown = max_cooldown
        self._clock = clock
        self._states: dict[str, _State] = {}

    def _state(self, provider: str) -> _State:
        state = self._states.get(provider)
        if state is None:  # not setdefault: that would build a state, deque and all, on every call
            state = self._states[provider] = _State()
        return state

    def state(self, provider: str) -> str:
        s = self._state(provider)
        if s.open_until is None:
            return CLOSED
        return OPEN if self._clock() < s.open_until else HALF_OPEN

    def cooling_down(self, provider: str) -> bool:
        return self._clock() < self._state(provider).cooldown_until

    def recently_failed(self, provider: str) -> bool:
        s = self._state(provider)
        return bool(s.failures) and s.failures[-1] >= self._clock() - self._window

    def acquire(self, provider: str) -> bool:
        """May a request go to this provider now? A half-open circuit admits one probe at a time."""
        if self.cooling_down(provider):
            return False
        state = self.state(provider)
        if state == CLOSED:
            return True
        if state == OPEN:
            return False
        s = self._state(provider)
        if s.probing:
            return False
        s.probing = True
        return True

    def success(self, provider: str) -> None:
        s = self._state(provider)
        s.consecutive = 0
        s.open_until = None
        s.probing = False

    def failure(self, provider: str, retry_after: float | None = None) -> None:
        s = self._state(provider)
        now = self._clock()
        s.failures.append(now)
        s.consecutive += 1
        if s.probing or s.consecutive >= self._failures_to_open:
            s.open_until = now + self._cooldown
        s.probing = False
        if retry_after is not None:
            s.cooldown_until = max(s.cooldown_until, now + min(retry_after, self._max_cooldown))

    def release(self, provider: str) -> None:
        """A probe that ended without a verdict (the client left): let another request probe."""
        self._state(provider).probing = False


def counts_against(upstream_status: int | None) -> bool:
    """Whether an upstream failure says something about the provider's health: server errors, rate limits,
    timeouts and transport failures (no status) do; the client's own mistakes (400, 404, 413, 422...) don't,
    or one tenant's malformed requests would open the circuit for every tenant."""
    return upstream_status is None or upstream_status >= 500 or upstream_status in (408, 429)


class Turn:
    """One request's turn at a provider. It ends with a verdict (`succeeded`, `failed`) or, on leaving the
    `with` block without one (cancelled, the client's own mistake, an error of ours), with a release: a
    half-open circuit's probe is never left taken."""

    __slots__ = ("_health", "_provider", "_resolved")

    def __init__(self, health: ProviderHealth, provider: str) -> None:
        self._health = health
        self._provider = provider
        self._resolved = False

    def succeeded(self) -> None:
        self._resolved = True
        self._health.success(self._provider)

    def failed(self, retry_after: float | None = None) -> None:
        self._resolved = True
        self._health.failure(self._provider, retry_after)

    def __enter__(self) -> Turn:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._resolved:
            self._health.release(self._provider)
