"""POST /v1/chat/completions."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.catalog.rules import apply_rules
from kimi_gateway.http import accounting
from kimi_gateway.http.body import parse_body
from kimi_gateway.http.completions import ResponseMeta, collect_unless_disconnected, sse_stream
from kimi_gateway.http.middleware import RequestInfo
from kimi_gateway.http.responses import FastJSONResponse, FastSSEResponse
from kimi_gateway.logs import event
from kimi_gateway.media.redact import redacted
from kimi_gateway.providers.events import Event
from kimi_gateway.runtime import Gateway
from kimi_gateway.schema.chat import ChatCompletionRequest
from kimi_gateway.schema.checks import check_partial, check_tools
from kimi_gateway.schema.responses import completion_id

router = APIRouter()
PATH = "/v1/chat/completions"

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post(
    PATH,
    tags=["chat"],
    summary="Create a chat completion",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}
            },
        }
    },
)
async def chat_completions(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    state = request.scope["state"]  # the dict itself: `request.state` builds a wrapper on first use
    info: RequestInfo = state["log"]
    body = await parse_body(request, ChatCompletionRequest, gateway.config.server.max_body_bytes)
    info.model, info.stream = body.model, body.stream
    check_tools(body)
    check_partial(body)
    card = gateway.catalog.get(body.model)
    apply_rules(body, card)
    key = state["key"]
    account = key.account_id if key is not None else None
    await gateway.media.prepare(body, card, account)
    if gateway.config.server.log_prompts:
        event("prompt", request_id=info.request_id, messages=redacted(body.messages))
    routed = gateway.router.route(body, account)
    meta = ResponseMeta(id=completion_id(), created=int(time.time()), model=body.model)
    await accounting.admit(request, gateway, body, routed, meta.id)

    if not body.stream:
        completion = await collect_unless_disconnected(request, routed, meta, info)
        info.provider = meta.provider
        if completion is None:
            return Response(status_code=499)
        return FastJSONResponse(completion)

    # Wait briefly for the first events: an early failure still gets a proper status and JSON error.
    batches = routed.events()
    first: asyncio.Future[list[Event]] = asyncio.ensure_future(anext(batches))
    keepalive = gateway.config.routing.keepalive_seconds
    await asyncio.wait((first,), timeout=keepalive)
    if first.done() and first.exception() is not None:
        await batches.aclose()  # type: ignore[attr-defined]
        first.result()  # raises the APIError
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return FastSSEResponse(
        sse_stream(routed, batches, first, meta, info, include_usage, keepalive), _SSE_HEADERS
    )
