"""POST /v1/chat/completions: its place in the API description. `FastPath` (http/app.py) serves it with
`ChatCompletion` (http/serving.py) before the framework sees it; should the framework ever route a request
here itself, the same object serves it."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from kimi_gateway.http.serving import ChatCompletion

router = APIRouter()
PATH = "/v1/chat/completions"


class _Served(Response):
    def __init__(self, request: Request) -> None:  # no super().__init__: nothing is rendered here
        self.request = request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await ChatCompletion(self.request.app.state.gateway, scope, receive, send).serve()


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
    return _Served(request)
