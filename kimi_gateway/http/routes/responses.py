"""OpenAI's Responses API: POST /v1/responses (served by `Completion` with `ResponsesFormat` before the
framework sees it: registered here for the API description), and the stored responses: GET and DELETE
/v1/responses/{id}, GET /v1/responses/{id}/input_items."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Path, Query
from starlette.requests import Request

from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.http.formats.responses import PATH
from kimi_gateway.runtime import Gateway

router = APIRouter()
ResponseId = Path(max_length=80)


def _account(request: Request) -> str | None:
    key: KeyRecord | None = request.state.key
    return key.account_id if key is not None else None


@router.get(PATH + "/{response_id}", tags=["responses"], summary="Retrieve a stored response")
async def get_response(request: Request, response_id: str = ResponseId) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    return (await gateway.responses.get(_account(request), response_id)).response


@router.delete(PATH + "/{response_id}", tags=["responses"], summary="Delete a stored response")
async def delete_response(request: Request, response_id: str = ResponseId) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    await gateway.responses.delete(_account(request), response_id)
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.get(PATH + "/{response_id}/input_items", tags=["responses"], summary="List a response's input items")
async def input_items(
    request: Request,
    response_id: str = ResponseId,
    after: str | None = Query(default=None, max_length=80),
    limit: int = Query(default=20, ge=1, le=100),
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    gateway: Gateway = request.app.state.gateway
    items = (await gateway.responses.get(_account(request), response_id)).input_items
    if order == "desc":
        items = items[::-1]
    if after is not None:
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    page = items[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(items) > limit,
    }
