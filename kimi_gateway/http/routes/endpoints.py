"""GET /api/v1/models/{id}/endpoints: each provider's offer for a model, with its live statistics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from kimi_gateway.catalog.listing import usd_per_token
from kimi_gateway.providers.registry import unconfigured_offers
from kimi_gateway.runtime import Gateway

UPTIME_WINDOWS = (("uptime_last_5m", 300), ("uptime_last_30m", 1800), ("uptime_last_1d", 86400))
router = APIRouter()


@router.get("/api/v1/models/{model_id:path}/endpoints", tags=["models"], summary="Endpoints and their stats")
async def model_endpoints(model_id: str, request: Request) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    card = gateway.catalog.get(model_id)
    stats = gateway.router.stats
    health = gateway.router.health
    # Uptime from the persisted buckets (every replica's, across restarts), with this process's unsaved.
    windows = {name: await gateway.uptime.outcomes(card.id, seconds) for name, seconds in UPTIME_WINDOWS}
    endpoints = []
    for e in gateway.router.endpoints_for(card.id):
        endpoints.append(
            {
                "name": f"{e.provider_name} | {card.id}",
                "model_id": card.id,
                "model_name": card.name,
                "provider_name": e.provider_name,
                "tag": e.provider,
                "upstream_model": e.upstream_model,
                "quantization": e.quantization,
                "context_length": e.context_length,
                "max_completion_tokens": None,
                "pricing": {
                    "prompt": usd_per_token(e.pricing.input),
                    "completion": usd_per_token(e.pricing.output),
                    "input_cache_read": usd_per_token(e.pricing.cached),
                },
                "supported_parameters": sorted(e.supported_parameters),
                "status": 0 if health.state(e.provider) == "closed" else -1,
                "circuit": health.state(e.provider),
                **stats.summary(e.provider, card.id),
                **{name: (w[e.provider].uptime if e.provider in w else None) for name, w in windows.items()},
            }
        )
    return {
        "data": {
            "id": card.id,
            "name": card.name,
            "created": card.created,
            "description": card.description,
            "architecture": {
                "input_modalities": card.input_modalities,
                "output_modalities": card.output_modalities,
            },
            "endpoints": endpoints,
            "unconfigured": unconfigured_offers(
                card.id, {e.provider: e.provider_name for e in gateway.router.endpoints_for(card.id)}
            ),
        }
    }
