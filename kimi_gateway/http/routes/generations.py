"""GET /api/v1/generation?id=: one request's record, as OpenRouter serves it; GET /api/v1/generations: the
calling account's, newest first, a page at a time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.requests import Request

from kimi_gateway.accounts import history
from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.errors import APIError
from kimi_gateway.money import usd
from kimi_gateway.runtime import Gateway

router = APIRouter(tags=["credits"])


@router.get("/api/v1/generation", summary="One request's model, provider, tokens, cost and timing")
async def generation(id: str, request: Request) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    key: KeyRecord | None = request.state.key
    record = await gateway.accounts.generation(id)
    # Records are written in batches, so a brief 404 right after a request ends is expected; retry.
    if record is None or key is None or record["account_id"] != key.account_id:
        raise APIError(404, f"Generation '{id}' not found.", code="generation_not_found")
    return {
        "data": {
            "id": record["id"],
            "model": record["model"],
            "provider_name": record["provider"],
            "created_at": datetime.fromtimestamp(record["created_at"], UTC).isoformat(),
            "streamed": record["streamed"],
            "cancelled": record["status"] == "cancelled",
            "status": record["status"],
            "finish_reason": record["finish_reason"],
            "tokens_prompt": record["prompt_tokens"],
            "tokens_completion": record["completion_tokens"],
            "native_tokens_prompt": record["prompt_tokens"],
            "native_tokens_completion": record["completion_tokens"],
            "native_tokens_reasoning": record["reasoning_tokens"],
            "native_tokens_cached": record["cached_tokens"],
            "total_cost": usd(record["cost"]),
            "usage": usd(record["cost"]),
            "latency": record["latency_ms"],
            "time_to_first_token": record["ttft_ms"],
            "http_referer": record["app_referer"],
            "app_title": record["app_title"],
            # A tool loop's model calls: each its own record, all naming the request (the response's id).
            "request_id": record["request_id"] or record["id"],
            "server_tool_calls": record["tool_calls"],
            "server_tool_cost": usd(record["tool_cost"]),
        }
    }


@router.get("/api/v1/generations", summary="The calling account's generations, newest first")
async def generations(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=history.MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=history.MAX_OFFSET)] = 0,
) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    key: KeyRecord | None = request.state.key
    if key is None:
        return {"data": [], "has_more": False}  # bootstrap: no keys, so no accounts
    # One more than asked tells whether another page follows.
    rows = await history.page(gateway.db, key.account_id, limit + 1, offset)
    return {"data": rows[:limit], "has_more": len(rows) > limit}
