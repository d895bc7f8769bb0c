"""GET /v1/models and GET /v1/models/{id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from kimi_gateway.runtime import Gateway
from kimi_gateway.schema.models import model_object

router = APIRouter()


def _providers(gateway: Gateway, model_id: str) -> list[str]:
    return [e.provider for e in gateway.router.endpoints_for(model_id)]


@router.get("/v1/models", tags=["models"], summary="List models")
async def list_models(request: Request) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    data = [model_object(card, _providers(gateway, card.id)) for card in gateway.catalog]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id:path}", tags=["models"], summary="Retrieve a model")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    card = gateway.catalog.get(model_id)
    return model_object(card, _providers(gateway, card.id))
