"""GET /metrics: Prometheus's text format (stats/metrics.py). Answered to loopback clients and to management
keys, or to anyone with `[server] metrics_public`; a 404 with `[server] metrics = false`."""

from __future__ import annotations

import os

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.accounts.keys import MANAGEMENT
from kimi_gateway.errors import APIError
from kimi_gateway.http.auth import authenticate, forwarded
from kimi_gateway.routing.health import HALF_OPEN, OPEN
from kimi_gateway.routing.plan import LOCAL
from kimi_gateway.runtime import Gateway
from kimi_gateway.stats.metrics import GatewayCollector, gauge

router = APIRouter()
_CIRCUIT = {OPEN: 2.0, HALF_OPEN: 1.0}


def _loopback(request: Request) -> bool:
    """A caller on this machine, and not a proxy relaying someone else's request."""
    host = request.client.host if request.client else ""
    return (host.startswith("127.") or host == "::1") and not forwarded(request.scope)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    server = gateway.config.server
    if not server.metrics:
        raise APIError(404, "Metrics are off ([server] metrics = false).", code="unknown_url")
    if not (server.metrics_public or _loopback(request)):
        key = await authenticate(gateway.keys, request.scope)
        if key is not None and key.kind != MANAGEMENT:
            raise APIError(
                403, "Metrics are for management keys.", type="permission_error", code="wrong_key_kind"
            )
    pid = str(os.getpid())
    health, stats = gateway.router.health, gateway.router.stats
    providers = sorted(gateway.router.providers)
    local = [(model_id, model.stats()) for model_id, model in gateway.local_models.items()]
    gauges = [
        gauge(
            "kimi_gateway_circuit_state",
            "Each provider's breaker in this worker: 0 closed, 1 half-open, 2 open",
            ["provider", "pid"],
            [([p, pid], _CIRCUIT.get(health.state(p), 0.0)) for p in providers],
        ),
        gauge(
            "kimi_gateway_engine_queue_depth",
            "Requests in this worker's embedded engine (running and waiting)",
            ["model", "pid"],
            [([m, pid], float(s["inflight"])) for m, s in local],
        ),
        gauge(
            "kimi_gateway_engine_tokens_per_second",
            "The embedded engine's p50 decode speed, last 30 minutes",
            ["model", "pid"],
            [([m, pid], stats.p50_throughput(LOCAL, m) or 0.0) for m, _ in local],
        ),
    ]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway.metrics, gauges))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
