"""GET /api/v1/activity (an account's usage by day, model and provider, as OpenRouter serves it) and
GET /api/v1/models/{id}/stats (a model page's public figures)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from starlette.requests import Request

from kimi_gateway.accounts.keys import MANAGEMENT, KeyRecord
from kimi_gateway.errors import APIError
from kimi_gateway.runtime import Gateway
from kimi_gateway.stats import reports

router = APIRouter(tags=["activity"])


@router.get("/api/v1/activity", summary="Usage of the last 30 UTC days by date, model and provider")
async def activity(
    request: Request,
    day: Annotated[date | None, Query(alias="date", description="one UTC day, YYYY-MM-DD")] = None,
    api_key_hash: Annotated[str | None, Query(max_length=64)] = None,
    account_id: Annotated[
        str | None, Query(max_length=40, description="management keys: any account")
    ] = None,
) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    key: KeyRecord | None = request.state.key
    if key is None:
        return {"data": []}  # bootstrap: no keys, so no accounts
    account = key.account_id
    if account_id is not None and account_id != account:
        if key.kind != MANAGEMENT:
            raise APIError(
                403,
                "Only management keys can read another account's activity.",
                type="permission_error",
                code="wrong_key_kind",
            )
        account = account_id
    return {"data": await reports.activity(gateway.db, account, api_key_hash, day)}


@router.get("/api/v1/models/{model_id:path}/stats", summary="A model's public usage, apps and uptime")
async def model_stats(
    model_id: str, request: Request, period: Literal["day", "week", "month"] = "week"
) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    card = gateway.catalog.get(model_id)
    return {"data": await reports.model_stats(gateway.db, gateway.uptime, card.id, period)}
