"""Rolling per-endpoint figures, in memory: uptime over 5 min / 30 min / 1 day, p50 TTFT and throughput.

Uptime counts success / (success + error) and leaves rate-limited attempts out, as OpenRouter does.

Figures live in time buckets, not per-request records: memory stays fixed whatever the request rate, the
day's uptime really covers the day, and nothing a request leaves behind outlives it as a Python object
(a long-lived object per request made the collector's full passes the gateway's largest cost).
"""

from __future__ import annotations

import random
import statistics
import time
from collections import deque
from collections.abc import Callable

DAY = 86400.0
WINDOW = 1800.0  # the longest window medians are taken over
FINE = 10.0  # seconds per bucket for the 5- and 30-minute windows
COARSE = 300.0  # seconds per bucket for the day
# Each fine bucket keeps a uniform sample of this many values: 180 buckets x 32 is plenty for a median.
_SAMPLE = 32
# A median is recomputed at most this often (routing with `sort` asks for it on every request).
_MEDIAN_TTL = 1.0


class _Counts:
    __slots__ = ("errors", "ok", "rate_limited", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.ok = 0
        self.errors = 0
        self.rate_limited = 0

    def count(self, ok: bool, rate_limited: bool) -> None:
        if rate_limited:
            self.rate_limited += 1
        elif ok:
            self.ok += 1
        else:
            self.errors += 1


class _Reservoir:
    """A uniform sample of at most `_SAMPLE` of the values offered (Algorithm R)."""

    __slots__ = ("seen", "values")

    def __init__(self) -> None:
        self.values: list[float] = []
        self.seen = 0

    def offer(self, value: float, rng: random.Random) -> None:
        self.seen += 1
        if len(self.values) < _SAMPLE:
            self.values.append(value)
        else:
            # Not randrange: it is some 40 bytecodes of Python on every request once the sample is full.
            slot = int(rng.random() * self.seen)
            if slot < _SAMPLE:
                self.values[slot] = value


class _Fine(_Counts):
    __slots__ = ("tps", "ttft")

    def __init__(self, start: float) -> None:
        super().__init__(start)
        self.ttft = _Reservoir()
        self.tps = _Reservoir()


class _Series:
    """One endpoint's buckets: fine ones for the last 30 minutes, coarse ones for the day."""

    __slots__ = ("coarse", "fine", "medians")

    def __init__(self) -> None:
        self.fine: deque[_Fine] = deque(maxlen=int(WINDOW / FINE) + 1)
        self.coarse: deque[_Counts] = deque(maxlen=int(DAY / COARSE) + 1)
        self.medians: dict[tuple[str, float], tuple[float, float | None]] = {}

    def current(self, now: float) -> tuple[_Fine, _Counts]:
        if not self.fine or now >= self.fine[-1].start + FINE:
            self.fine.append(_Fine(now - now % FINE))
        if not self.coarse or now >= self.coarse[-1].start + COARSE:
            self.coarse.append(_Counts(now - now % COARSE))
        return self.fine[-1], self.coarse[-1]


class EndpointStats:
    def __init__(self, clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._series: dict[tuple[str, str], _Series] = {}
        # Outcomes not yet persisted, per (5-minute start in epoch seconds, provider, model): successes,
        # errors, rate-limited. stats/uptime.py takes them to the database (`take`).
        self.unsaved: dict[tuple[int, str, str], list[int]] = {}
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
        series = self._series.get((provider, model))
        if series is None:
            series = self._series[(provider, model)] = _Series()
        fine, coarse = series.current(self._clock())
        fine.count(ok, rate_limited)
        coarse.count(ok, rate_limited)
        key = (int(time.time() // COARSE * COARSE), provider, model)
        unsaved = self.unsaved.get(key)
        if unsaved is None:
            unsaved = self.unsaved[key] = [0, 0, 0]
        unsaved[2 if rate_limited else 0 if ok else 1] += 1
        if ok:
            if ttft_ms is not None:
                fine.ttft.offer(ttft_ms, self._rng)
            if tokens_per_second is not None:
                fine.tps.offer(tokens_per_second, self._rng)

    def take(self) -> dict[tuple[int, str, str], list[int]]:
        """The outcomes not yet persisted, handed over (and forgotten here)."""
        taken, self.unsaved = self.unsaved, {}
        return taken

    def _buckets(self, provider: str, model: str, seconds: float) -> list[_Counts]:
        series = self._series.get((provider, model))
        if series is None:
            return []
        # A bucket counts when any of it lies inside the window: figures run up to one bucket long.
        since = self._clock() - seconds
        if seconds <= WINDOW:
            return [b for b in series.fine if b.start + FINE > since]
        return [b for b in series.coarse if b.start + COARSE > since]

    def uptime(self, provider: str, model: str, seconds: float) -> float | None:
        buckets = self._buckets(provider, model, seconds)
        ok = sum(b.ok for b in buckets)
        counted = ok + sum(b.errors for b in buckets)
        return round(100.0 * ok / counted, 2) if counted else None

    def requests(self, provider: str, model: str, seconds: float) -> int:
        return sum(b.ok + b.errors + b.rate_limited for b in self._buckets(provider, model, seconds))

    def _median(self, provider: str, model: str, which: str, seconds: float) -> float | None:
        series = self._series.get((provider, model))
        if series is None:
            return None
        now = self._clock()
        cached = series.medians.get((which, seconds))
        if cached is not None and now - cached[0] < _MEDIAN_TTL:
            return cached[1]
        values: list[float] = []
        for bucket in self._buckets(provider, model, min(seconds, WINDOW)):
            assert isinstance(bucket, _Fine)
            values.extend((bucket.ttft if which == "ttft" else bucket.tps).values)
        median = round(statistics.median(values), 2) if values else None
        series.medians[(which, seconds)] = (now, median)
        return median

    def p50_ttft_ms(self, provider: str, model: str, seconds: float = WINDOW) -> float | None:
        return self._median(provider, model, "ttft", seconds)

    def p50_throughput(self, provider: str, model: str, seconds: float = WINDOW) -> float | None:
        return self._median(provider, model, "tps", seconds)

    def summary(self, provider: str, model: str) -> dict[str, object]:
        return {
            "uptime_last_5m": self.uptime(provider, model, 300),
            "uptime_last_30m": self.uptime(provider, model, WINDOW),
            "uptime_last_1d": self.uptime(provider, model, DAY),
            "latency_last_30m": {"p50": self.p50_ttft_ms(provider, model)},
            "throughput_last_30m": {"p50": self.p50_throughput(provider, model)},
            "requests_last_1d": self.requests(provider, model, DAY),
            "sticky": dict(
                zip(
                    ("requests", "cache_hits", "cached_tokens"),
                    self._sticky.get((provider, model), [0, 0, 0]),
                    strict=True,
                )
            ),
        }
