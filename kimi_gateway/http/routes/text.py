"""POST /v1/completions (the legacy completions API): its place in the API description. `FastPath`
(http/app.py) serves it with `Completion` (http/serving.py) before the framework sees it."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.http.formats.text import PATH, TextFormat
from kimi_gateway.http.routes.bodies import json_body
from kimi_gateway.http.serving import Served

router = APIRouter()


@router.post(
    PATH,
    tags=["completions"],
    summary="Continue a prompt (the legacy completions API)",
    openapi_extra=json_body("CompletionRequest"),
)
async def completions(request: Request) -> Response:
    return Served(request, TextFormat)
