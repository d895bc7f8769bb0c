"""POST /v1/tokenizers/estimate-token-count, as Moonshot serves it."""

from __future__ import annotations

from contextlib import nullcontext

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.http.body import parse_body
from kimi_gateway.http.replies import ORJSONResponse
from kimi_gateway.routing.variants import apply_variant
from kimi_gateway.runtime import Gateway
from kimi_gateway.schema.chat import ChatCompletionRequest

router = APIRouter()

# Says how the number was reached: the model's own tokenizer, or the documented estimate.
METHOD_HEADER = "X-Token-Count-Method"


@router.post("/v1/tokenizers/estimate-token-count", tags=["tokenizers"], summary="Count a request's tokens")
async def estimate_token_count(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    key: KeyRecord | None = request.state.key
    async with gateway.accounts.limited(key) if key is not None else nullcontext():
        body = await parse_body(request, ChatCompletionRequest, gateway.config.server.max_body_bytes)
        apply_variant(body)
        total, method = await gateway.count_prompt_tokens(body)
    return ORJSONResponse({"data": {"total_tokens": total}}, headers={METHOD_HEADER: method})
