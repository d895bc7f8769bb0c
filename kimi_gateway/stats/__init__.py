"""Statistics: rolling per-endpoint uptime, latency and throughput."""

from kimi_gateway.stats.endpoints import EndpointStats

__all__ = ["EndpointStats"]
