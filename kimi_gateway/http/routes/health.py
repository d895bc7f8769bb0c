"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.http.replies import ORJSONResponse
from kimi_gateway.http.shutdown import Drain
from kimi_gateway.runtime import Gateway

router = APIRouter()


@router.get("/health", tags=["health"], summary="Liveness")
async def health() -> Response:
    return ORJSONResponse({"status": "ok"})


@router.get("/ready", tags=["health"], summary="Readiness: every configured provider can serve")
async def ready(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    # The local models' engine processes start on demand: "stopped" is not "unready".
    models = {model_id: engine.stats() for model_id, engine in gateway.local_models.items()}
    drain: Drain = request.app.state.drain
    status = "draining" if drain.draining else "ready" if gateway.is_ready() else "starting"
    return ORJSONResponse(
        {"status": status, "local_models": models}, status_code=200 if status == "ready" else 503
    )
