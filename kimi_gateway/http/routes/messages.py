"""Anthropic's Messages API: POST /v1/messages (served by `Completion` with `MessagesFormat` before the
framework sees it: registered here for the API description) and POST /v1/messages/count_tokens.

Both also answer under /anthropic (for `ANTHROPIC_BASE_URL=http://host/anthropic`), and with the SDK's
`?beta=true`, which routing ignores as it ignores any query string.
"""

from __future__ import annotations

from contextlib import nullcontext

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.http.body import parse_body
from kimi_gateway.http.formats.anthropic import to_chat
from kimi_gateway.http.replies import ORJSONResponse
from kimi_gateway.http.routes.bodies import json_body
from kimi_gateway.http.routes.tokenizers import METHOD_HEADER
from kimi_gateway.http.validation import anthropic_validation_error
from kimi_gateway.routing.variants import apply_variant
from kimi_gateway.runtime import Gateway
from kimi_gateway.schema.anthropic import CountTokensRequest

router = APIRouter()


@router.post(
    "/v1/messages/count_tokens",
    tags=["anthropic"],
    summary="Count a message request's input tokens",
    openapi_extra=json_body("CountTokensRequest"),
)
@router.post("/anthropic/v1/messages/count_tokens", tags=["anthropic"], include_in_schema=False)
async def count_tokens(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    key: KeyRecord | None = request.state.key
    async with gateway.accounts.limited(key) if key is not None else nullcontext():
        body = await parse_body(
            request, CountTokensRequest, gateway.config.server.max_body_bytes, anthropic_validation_error
        )
        chat = to_chat(body)
        apply_variant(chat)
        total, method = await gateway.count_prompt_tokens(chat)
    return ORJSONResponse({"input_tokens": total}, headers={METHOD_HEADER: method})
