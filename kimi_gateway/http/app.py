"""The ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from kimi_gateway import __version__
from kimi_gateway.config import GatewayConfig, load_config
from kimi_gateway.http import errors
from kimi_gateway.http.middleware import RequestLogMiddleware
from kimi_gateway.http.routes import chat, endpoints, health, models
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


def create_app(config: GatewayConfig | None = None) -> FastAPI:
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
    app.add_middleware(RequestLogMiddleware)
    errors.install(app)
    app.include_router(chat.router)
    app.include_router(endpoints.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
