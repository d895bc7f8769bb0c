"""The ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from kimi_gateway import __version__
from kimi_gateway.config import GatewayConfig, load_config
from kimi_gateway.errors import APIError
from kimi_gateway.http import accounting, errors
from kimi_gateway.http.auth import AuthMiddleware
from kimi_gateway.http.middleware import RequestLogMiddleware
from kimi_gateway.http.responses import error_response
from kimi_gateway.http.routes import (
    chat,
    credits,
    endpoints,
    files,
    generations,
    health,
    keys,
    models,
    tokenizers,
)
from kimi_gateway.runtime import build_gateway
from kimi_gateway.schema.chat import ChatCompletionRequest


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    # The chat route parses its own body (one pass, our error shape), so its schema is added here.
    request_schema = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(request_schema.pop("$defs", {}))
    components["ChatCompletionRequest"] = request_schema
    app.openapi_schema = schema
    return schema


class FastPath:
    """POST /v1/chat/completions goes straight to its handler; everything else to the FastAPI app.

    The hot route needs none of the framework's dependency injection or middleware stack, and skipping it
    roughly halves the gateway's own cost per request. The route stays registered on the FastAPI app so
    /docs and /openapi.json describe it.
    """

    def __init__(self, api: FastAPI) -> None:
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == chat.PATH and scope["method"] == "POST":
            scope["app"] = self.api
            request = Request(scope, receive, send)
            try:
                response = await chat.chat_completions(request)
            except APIError as exc:
                response = error_response(exc)
            except Exception as exc:
                response = await errors.unexpected(request, exc)
            try:
                await response(scope, receive, send)
            finally:
                # Settled after the last byte went out, whether the request finished, failed or was cut.
                ticket = scope["state"].get("ticket")
                if ticket is not None:
                    # Synchronous, so a shutdown cancelling this task cannot interrupt it.
                    accounting.finish(
                        self.api.state.gateway, ticket, scope["state"]["log"], response.status_code
                    )
            return
        await self.api(scope, receive, send)


def create_app(config: GatewayConfig | None = None) -> ASGIApp:
    """The whole gateway as one ASGI app."""
    api = create_api(config)
    return RequestLogMiddleware(AuthMiddleware(FastPath(api), api.state.gateway))


def create_api(config: GatewayConfig | None = None) -> FastAPI:
    gateway = build_gateway(config or load_config())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(title="kimi-gateway", version=__version__, lifespan=lifespan)
    app.state.gateway = gateway
    errors.install(app)
    app.include_router(chat.router)
    app.include_router(endpoints.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(tokenizers.router)
    app.include_router(keys.router)
    app.include_router(credits.router)
    app.include_router(generations.router)
    app.include_router(files.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
