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


class Metrics:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self.counters: dict[str, dict[str, float]] = {
            "requests": {},  # route, model, provider, status
            "tokens": {},  # model, provider, kind
            "cost": {},  # model, provider (USD)
            "upstream_errors": {},  # provider, kind
            "flush_errors": {},  # (no labels): accounting batches the database did not take
        }
        self.histograms: dict[str, dict[str, list[float]]] = {
            "duration": {},  # route, model, provider
            "ttft": {},  # model, provider
            "overhead": {},  # route
            "batches": {},  # (no labels): accounting batch sizes
        }
        self._dirty = False

    def request(
        self,
        route: str,
        model: str,
        provider: str,
        status: int,
        seconds: float,
        ttft_seconds: float | None,
        overhead_seconds: float | None,
        tokens: tuple[int, int, int, int],
        cost_usd: float,
        failures: list[tuple[str, str]],
    ) -> None:
        """One request's figures: what its serving object already knows at its end."""
        counters, histograms = self.counters, self.histograms
        requests = counters["requests"]
        key = _SEP.join((route, model, provider, str(status)))
        requests[key] = requests.get(key, 0) + 1
        _observe(histograms["duration"], _SEP.join((route, model, provider)), DURATION_BOUNDS, seconds)
        endpoint = model + _SEP + provider
        if ttft_seconds is not None:
            _observe(histograms["ttft"], endpoint, DURATION_BOUNDS, ttft_seconds)
        if overhead_seconds is not None:
            _observe(histograms["overhead"], route, OVERHEAD_BOUNDS, max(overhead_seconds, 0.0))
        if any(tokens):
            counted = counters["tokens"]
            for kind, value in zip(("prompt", "cached", "reasoning", "completion"), tokens, strict=True):
                if value:
                    k = endpoint + _SEP + kind
                    counted[k] = counted.get(k, 0) + value
        if cost_usd:
            counters["cost"][endpoint] = counters["cost"].get(endpoint, 0) + cost_usd
        for failed_provider, kind in failures:
            errors = counters["upstream_errors"]
            k = failed_provider + _SEP + kind
            errors[k] = errors.get(k, 0) + 1
        self._dirty = True

    def batch(self, size: int, written: bool) -> None:
        """One accounting batch the recorder wrote (or failed to)."""
        _observe(self.histograms["batches"], "", BATCH_BOUNDS, size)
        if not written:
            self.counters["flush_errors"][""] = self.counters["flush_errors"].get("", 0) + 1

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
