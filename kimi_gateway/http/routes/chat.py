"""POST /v1/chat/completions: its place in the API description. `FastPath` (http/app.py) serves it with
`Completion` (http/serving.py) before the framework sees it."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.http.formats.chat import ChatFormat
from kimi_gateway.http.routes.bodies import json_body
from kimi_gateway.http.serving import Served

router = APIRouter()
PATH = "/v1/chat/completions"


@router.post(
    PATH, tags=["chat"], summary="Create a chat completion", openapi_extra=json_body("ChatCompletionRequest")
)
async def chat_completions(request: Request) -> Response:
    return Served(request, ChatFormat)
