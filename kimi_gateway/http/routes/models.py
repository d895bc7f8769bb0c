"""GET /v1/models and GET /v1/models/{id}: OpenAI's (and OpenRouter's) shape, or Anthropic's when the
client sends `anthropic-version`, as the Anthropic SDK always does (and at /anthropic/v1/models)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from starlette.requests import Request

from kimi_gateway.catalog import ModelCard
from kimi_gateway.catalog.listing import anthropic_model, anthropic_page, model_object
from kimi_gateway.runtime import Gateway

router = APIRouter()


def _model(gateway: Gateway, card: ModelCard) -> dict[str, Any]:
    body = model_object(card, [e.provider for e in gateway.router.endpoints_for(card.id)])
    engine = gateway.local_models.get(card.id)
    if engine is not None:
        # A local model is available whether or not its engine process runs (the next request starts
        # it); this says which, and whether the last start failed.
        body["engine"] = engine.state
    return body


def _anthropic(request: Request) -> bool:
    return "anthropic-version" in request.headers or request.url.path.startswith("/anthropic/")


@router.get("/v1/models", tags=["models"], summary="List models")
@router.get("/anthropic/v1/models", tags=["anthropic"], summary="List models (Anthropic's shape)")
async def list_models(
    request: Request,
    after_id: str | None = Query(default=None, max_length=256),
    before_id: str | None = Query(default=None, max_length=256),
    limit: int = Query(default=20, ge=1, le=1000),
) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    if _anthropic(request):
        models = [anthropic_model(card) for card in gateway.catalog]
        return anthropic_page(models, after_id, before_id, limit)
    data = [_model(gateway, card) for card in gateway.catalog]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id:path}", tags=["models"], summary="Retrieve a model")
@router.get("/anthropic/v1/models/{model_id:path}", tags=["anthropic"], summary="Retrieve a model")
async def get_model(model_id: str, request: Request) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    card = gateway.catalog.get(model_id)
    if _anthropic(request):
        return anthropic_model(card)
    return _model(gateway, card)
