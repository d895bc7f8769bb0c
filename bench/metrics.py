"""The chat fast path with Prometheus metrics on and off: two gateways on one mock upstream, wrk taking
turns between them (`--rounds`, each column its median run). Target: on >= 0.95x the RPS of off.

Run: .venv/bin/python -m bench.metrics [--seconds 5] [--rounds 3]   (needs wrk)
"""

from __future__ import annotations

from bench.setting import compare

if __name__ == "__main__":
    compare("metrics", "metrics = false", "metrics = true")
