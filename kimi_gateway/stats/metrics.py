"""Prometheus metrics, paid for with plain counters on the request path.

A request adds to dicts of ints and floats (one look-up per figure, no locks, no label objects); the
Prometheus families are built only when /metrics is scraped. Under `serve --workers N`, each worker writes
its counters to `data_dir/metrics/<pid>.json` every `SNAPSHOT_SECONDS` when they changed (and when it answers
a scrape), and the answering worker adds every worker's file up: counters and histograms of every worker
that ever ran since the server started (so they never go down), gauges of the live ones, by `pid`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from kimi_gateway.outcome import RequestOutcome

METRICS_DIR_ENV = "KIMI_GATEWAY_METRICS_DIR"  # set by `serve --workers N` for its workers
SNAPSHOT_SECONDS = 1.0
# Seconds: request durations, time to first token, the gateway's own overhead.
DURATION_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
OVERHEAD_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
BATCH_BOUNDS = (1, 10, 100, 1000)
_SEP = "\x1f"


def _observe(histograms: dict[str, list[float]], key: str, bounds: tuple[float, ...], value: float) -> None:
    """[count per bucket..., +Inf bucket, sum]: non-cumulative, so two workers' lists add up."""
    counts = histograms.get(key)
    if counts is None:
        counts = histograms[key] = [0.0] * (len(bounds) + 2)
    counts[bisect.bisect_left(bounds, value)] += 1
    counts[-1] += value


class _Figures:
    """One (route, model, provider)'s figures: a request costs one dict look-up to find them."""

    __slots__ = ("cost", "duration", "statuses", "tokens", "ttft")

    def __init__(self) -> None:
        self.statuses: dict[int, int] = {}
        self.duration = [0.0] * (len(DURATION_BOUNDS) + 2)
        self.ttft = [0.0] * (len(DURATION_BOUNDS) + 2)
        self.tokens = [0, 0, 0, 0]  # prompt, cached, reasoning, completion
        self.cost = 0.0


_KINDS = ("prompt", "cached", "reasoning", "completion")


class Metrics:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._live: dict[tuple[str, str, str], _Figures] = {}
        self._overhead: dict[str, list[float]] = {}  # route
        self._failures: dict[tuple[str, str], int] = {}  # provider, kind
        self._batches = [0.0] * (len(BATCH_BOUNDS) + 2)
        self._flush_errors = 0
        self._dirty = False

    def request(self, outcome: RequestOutcome, seconds: float) -> None:
        """One request's figures, read from its outcome at its end. Only a routed request names a model
        (the catalog's ids): a refused one's is whatever the client sent, and as a label it would grow
        the figures without bound."""
        last = outcome.last
        route = outcome.route
        key = (route, last.model, last.provider_name or "") if last is not None else (route, "", "")
        figures = self._live.get(key)
        if figures is None:
            figures = self._live[key] = _Figures()
        figures.statuses[outcome.status] = figures.statuses.get(outcome.status, 0) + 1
        duration = figures.duration
        duration[bisect.bisect_left(DURATION_BOUNDS, seconds)] += 1
        duration[-1] += seconds
        if last is not None and last.ttft_ms is not None:
            ttft_seconds = last.ttft_ms / 1000
            ttft = figures.ttft
            ttft[bisect.bisect_left(DURATION_BOUNDS, ttft_seconds)] += 1
            ttft[-1] += ttft_seconds
        if outcome.overhead_seconds is not None:
            _observe(self._overhead, route, OVERHEAD_BOUNDS, outcome.overhead_seconds)
        counted = figures.tokens
        for generation in outcome.generations:
            usage = generation.usage
            if usage is not None:
                counted[0] += usage.prompt_tokens
                counted[1] += usage.cached_tokens
                counted[2] += usage.reasoning_tokens
                counted[3] += usage.completion_tokens
            if generation.cost_nano:
                figures.cost += generation.cost_nano / 1e9
        for failure in outcome.failures:
            label = (failure.provider, failure.kind)
            self._failures[label] = self._failures.get(label, 0) + 1
        self._dirty = True

    @property
    def counters(self) -> dict[str, dict[str, float]]:
        """This process's counters, keyed by their label values joined (the snapshot's form)."""
        requests: dict[str, float] = {}
        tokens: dict[str, float] = {}
        cost: dict[str, float] = {}
        for (route, model, provider), figures in self._live.items():
            for status, count in figures.statuses.items():
                requests[_SEP.join((route, model, provider, str(status)))] = count
            for kind, value in zip(_KINDS, figures.tokens, strict=True):
                if value:
                    k = _SEP.join((model, provider, kind))
                    tokens[k] = tokens.get(k, 0) + value
            if figures.cost:
                k = model + _SEP + provider
                cost[k] = cost.get(k, 0) + figures.cost
        return {
            "requests": requests,
            "tokens": tokens,
            "cost": cost,
            "upstream_errors": {_SEP.join(k): v for k, v in self._failures.items()},
            "flush_errors": {"": self._flush_errors} if self._flush_errors else {},
        }

    @property
    def histograms(self) -> dict[str, dict[str, list[float]]]:
        duration: dict[str, list[float]] = {}
        ttft: dict[str, list[float]] = {}
        for (route, model, provider), figures in self._live.items():
            duration[_SEP.join((route, model, provider))] = list(figures.duration)
            if figures.ttft[-2] or any(figures.ttft[:-1]):
                k = model + _SEP + provider
                have = ttft.get(k)
                ttft[k] = (
                    list(figures.ttft)
                    if have is None
                    else [a + b for a, b in zip(have, figures.ttft, strict=True)]
                )
        return {
            "duration": duration,
            "ttft": ttft,
            "overhead": {k: list(v) for k, v in self._overhead.items()},
            "batches": {"": list(self._batches)} if self._batches[-1] or any(self._batches) else {},
        }

    def batch(self, size: int, written: bool) -> None:
        """One accounting batch the recorder wrote (or failed to)."""
        self._batches[bisect.bisect_left(BATCH_BOUNDS, size)] += 1
        self._batches[-1] += size
        if not written:
            self._flush_errors += 1
        self._dirty = True

    # ---- several workers -----------------------------------------------------------------------------

    async def keep_written(self) -> None:
        """Under several workers: this worker's counters to its file, whenever they changed."""
        while True:
            await asyncio.sleep(SNAPSHOT_SECONDS)
            if self._dirty:
                self.write()

    def write(self) -> None:
        if self.folder is None:
            return
        self._dirty = False
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{os.getpid()}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps({"counters": self.counters, "histograms": self.histograms}))
        temporary.replace(path)  # a reader never sees half a file

    def merged(self) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, list[float]]]]:
        """Every worker's counters added up (this process's, when there is no folder)."""
        if self.folder is None:
            return self.counters, self.histograms
        self.write()
        counters: dict[str, dict[str, float]] = {name: {} for name in self.counters}
        histograms: dict[str, dict[str, list[float]]] = {name: {} for name in self.histograms}
        for path in self.folder.glob("*.json"):
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                snapshot = orjson.loads(path.read_bytes())
                for name, values in snapshot["counters"].items():
                    into = counters.setdefault(name, {})
                    for key, value in values.items():
                        into[key] = into.get(key, 0) + value
                for name, values in snapshot["histograms"].items():
                    hinto = histograms.setdefault(name, {})
                    for key, counts in values.items():
                        have = hinto.get(key)
                        hinto[key] = (
                            counts if have is None else [a + b for a, b in zip(have, counts, strict=True)]
                        )
        return counters, histograms


def _histogram(
    name: str, doc: str, labels: list[str], values: dict[str, list[float]], bounds: tuple[float, ...]
) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, counts in sorted(values.items()):
        cumulative, buckets = 0.0, []
        for bound, count in zip((*bounds, float("inf")), counts[:-1], strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
        family.add_metric(key.split(_SEP) if labels else [], buckets, counts[-1])
    return family


def _counter(name: str, doc: str, labels: list[str], values: dict[str, float]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(key.split(_SEP) if labels else [], value)
    return family


class GatewayCollector(Collector):
    """The families of one scrape: the (merged) counters, and this worker's live gauges."""

    def __init__(self, metrics: Metrics, gauges: list[Metric]) -> None:
        self.metrics = metrics
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        counters, histograms = self.metrics.merged()
        yield _counter(
            "kimi_gateway_requests",
            "Requests by route, model, provider and status",
            ["route", "model", "provider", "status"],
            counters["requests"],
        )
        yield _histogram(
            "kimi_gateway_request_duration_seconds",
            "Request duration, to the last byte",
            ["route", "model", "provider"],
            histograms["duration"],
            DURATION_BOUNDS,
        )
        yield _histogram(
            "kimi_gateway_time_to_first_token_seconds",
            "Time to the first token",
            ["model", "provider"],
            histograms["ttft"],
            DURATION_BOUNDS,
        )
        yield _histogram(
            "kimi_gateway_overhead_seconds",
            "The gateway's own time: total time to the response's start minus time waiting on providers",
            ["route"],
            histograms["overhead"],
            OVERHEAD_BOUNDS,
        )
        yield _counter(
            "kimi_gateway_tokens",
            "Tokens by category (prompt includes cached; completion includes reasoning)",
            ["model", "provider", "kind"],
            counters["tokens"],
        )
        yield _counter("kimi_gateway_cost_usd", "Cost charged, USD", ["model", "provider"], counters["cost"])
        yield _counter(
            "kimi_gateway_upstream_errors",
            "Failed provider attempts by kind",
            ["provider", "kind"],
            counters["upstream_errors"],
        )
        yield _histogram(
            "kimi_gateway_accounting_batch_size",
            "Generation records per accounting batch",
            [],
            histograms["batches"],
            BATCH_BOUNDS,
        )
        yield _counter(
            "kimi_gateway_accounting_flush_errors",
            "Accounting batches the database did not take",
            [],
            counters["flush_errors"],
        )
        yield from self.gauges


def gauge(name: str, doc: str, labels: list[str], values: list[tuple[list[str], float]]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family
