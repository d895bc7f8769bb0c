"""Rolling per-endpoint figures, in memory: uptime over 5 min / 30 min / 1 day, p50 TTFT and throughput.

Uptime counts success / (success + error) and leaves rate-limited attempts out, as OpenRouter does.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

DAY = 86400.0
_MAX_SAMPLES = 50_000


@dataclass(slots=True, frozen=True)
class Sample:
    at: float
    ok: bool
    rate_limited: bool
    ttft_ms: float | None
    tokens_per_second: float | None


class EndpointStats:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._samples: dict[tuple[str, str], deque[Sample]] = {}
        # Requests that stickiness sent back to a provider, and the cached prompt tokens they got there.
        self._sticky: dict[tuple[str, str], list[int]] = {}

    def record_sticky(self, provider: str, model: str, cached_tokens: int) -> None:
        counts = self._sticky.setdefault((provider, model), [0, 0, 0])
        counts[0] += 1
        counts[1] += cached_tokens > 0
        counts[2] += cached_tokens

    def record(
        self,
        provider: str,
        model: str,
        ok: bool,
        *,
        rate_limited: bool = False,
        ttft_ms: float | None = None,
        tokens_per_second: float | None = None,
    ) -> None:
        now = self._clock()
        samples = self._samples.setdefault((provider, model), deque(maxlen=_MAX_SAMPLES))
        samples.append(Sample(now, ok, rate_limited, ttft_ms, tokens_per_second))
        while samples and samples[0].at < now - DAY:
            samples.popleft()

    def _window(self, provider: str, model: str, seconds: float) -> list[Sample]:
        since = self._clock() - seconds
        return [s for s in self._samples.get((provider, model), ()) if s.at >= since]

    def uptime(self, provider: str, model: str, seconds: float) -> float | None:
        counted = [s for s in self._window(provider, model, seconds) if not s.rate_limited]
        if not counted:
            return None
        return round(100.0 * sum(s.ok for s in counted) / len(counted), 2)

    def p50_ttft_ms(self, provider: str, model: str, seconds: float = 1800.0) -> float | None:
        values = [s.ttft_ms for s in self._window(provider, model, seconds) if s.ok and s.ttft_ms is not None]
        return round(statistics.median(values), 2) if values else None

    def p50_throughput(self, provider: str, model: str, seconds: float = 1800.0) -> float | None:
        values = [
            s.tokens_per_second
            for s in self._window(provider, model, seconds)
            if s.ok and s.tokens_per_second is not None
        ]
        return round(statistics.median(values), 2) if values else None

    def summary(self, provider: str, model: str) -> dict[str, object]:
        return {
            "uptime_last_5m": self.uptime(provider, model, 300),
            "uptime_last_30m": self.uptime(provider, model, 1800),
            "uptime_last_1d": self.uptime(provider, model, DAY),
            "latency_last_30m": {"p50": self.p50_ttft_ms(provider, model)},
            "throughput_last_30m": {"p50": self.p50_throughput(provider, model)},
            "requests_last_1d": len(self._window(provider, model, DAY)),
            "sticky": dict(
                zip(
                    ("requests", "cache_hits", "cached_tokens"),
                    self._sticky.get((provider, model), [0, 0, 0]),
                    strict=True,
                )
            ),
        }
