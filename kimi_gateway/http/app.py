"""The ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from kimi_gateway import __version__
from kimi_gateway.config import GatewayConfig, load_config
from kimi_gateway.errors import APIError
from kimi_gateway.http import dispatch, errors, openapi
from kimi_gateway.http.auth import AuthMiddleware
from kimi_gateway.http.body import BodyLimitMiddleware, too_large
from kimi_gateway.http.dispatch import FORMATS
from kimi_gateway.http.formats.base import FormatContext
from kimi_gateway.http.middleware import HeadMiddleware, RequestLogMiddleware, route_path
from kimi_gateway.http.routes import (
    activity,
    agents,
    credits,
    docs,
    endpoints,
    files,
    generations,
    health,
    keys,
    messages,
    metrics,
    models,
    tokenizers,
    vector_stores,
    web,
)
from kimi_gateway.http.routes import responses as responses_routes
from kimi_gateway.http.serving import Completion, Services
from kimi_gateway.http.shutdown import Drain
from kimi_gateway.media.files import file_too_large
from kimi_gateway.runtime import Gateway, build_gateway


class FastPath:
    """The generation routes (http/dispatch.py: chat completions, completions, Anthropic Messages,
    Responses) go straight to their serving object; everything else through the middlewares to the FastAPI
    app.

    The hot route needs none of the framework's dependency injection or middleware stack: `Completion`
    does the same request log and key check itself, as plain calls. The route stays registered on the
    FastAPI app so /docs and /openapi.json describe it.
    """

    def __init__(self, api: FastAPI) -> None:
        self.api = api
        gateway: Gateway = api.state.gateway
        self.gateway = gateway
        config = gateway.config
        self.services = Services(
            gateway.core,
            gateway.keys,
            FormatContext(
                config.server.max_body_bytes,
                config.routing.strict_rules,
                gateway.responses,
                searches=gateway.tools.unavailable("web_search") is None,
            ),
        )
        # Large JSON answers (model lists, file contents) gzipped for clients that accept it.
        self.rest = RequestLogMiddleware(
            HeadMiddleware(
                AuthMiddleware(
                    GZipMiddleware(BodyLimitMiddleware(api, self._body_limit), minimum_size=4096),
                    self.gateway.keys,
                )
            )
        )

    def _body_limit(self, scope: Scope) -> tuple[int, APIError]:
        config = self.gateway.config
        if route_path(scope) == "/v1/files":  # an upload: the file's cap, and room for the form around it
            return config.media.max_file_bytes + 64 * 1024, file_too_large(config.media.max_file_bytes)
        return config.server.max_body_bytes, too_large(config.server.max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fmt = FORMATS.get(scope.get("path", ""))
        if fmt is None and scope.get("root_path"):
            fmt = FORMATS.get(route_path(scope))
        if fmt is not None and scope["type"] == "http" and scope["method"] == "POST":
            scope["app"] = self.api
            await Completion(self.services, fmt(), scope, receive, send).serve()
        else:
            await self.rest(scope, receive, send)


# What a browser app may send and read, when CORS is on: the API's own headers, OpenRouter's app headers,
# and the Anthropic SDK's.
CORS_REQUEST_HEADERS = (
    "authorization",
    "content-type",
    "x-api-key",
    "http-referer",
    "x-title",
    "x-openrouter-title",
    "anthropic-version",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "x-stainless-lang",
    "x-stainless-package-version",
    "x-stainless-os",
    "x-stainless-arch",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-retry-count",
    "x-stainless-timeout",
)
CORS_EXPOSED_HEADERS = (
    "x-request-id",
    "x-agent-run-id",
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-token-count-method",
)


def create_app(config: GatewayConfig | None = None) -> ASGIApp:
    """The whole gateway as one ASGI app."""
    config = config or load_config()
    app: ASGIApp = FastPath(create_api(config))
    origins = config.server.cors_origins
    if origins:
        # Outside everything, so preflights are answered before routing or authentication. Credentials
        # (cookies) are never allowed: keys travel in headers.
        app = CORSMiddleware(
            app,
            allow_origins=origins,
            allow_methods=("GET", "POST", "PATCH", "DELETE", "HEAD", "OPTIONS"),
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            allow_credentials=False,
            max_age=600,
        )
    return app


def create_api(config: GatewayConfig | None = None) -> FastAPI:
    gateway = build_gateway(config or load_config())
    drain = Drain(gateway.config.server.drain_seconds)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        drain.install()  # the server's signal handlers exist by now
        try:
            yield
        finally:
            await gateway.stop()

    # /docs is served from the package's own Swagger UI (routes/docs.py); ReDoc (CDN-only) is off.
    app = FastAPI(title="kimi-gateway", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.gateway = gateway
    app.state.drain = drain
    errors.install(app)
    dispatch.register(app)
    app.include_router(messages.router)
    app.include_router(responses_routes.router)
    app.include_router(activity.router)
    app.include_router(endpoints.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(tokenizers.router)
    app.include_router(keys.router)
    app.include_router(credits.router)
    app.include_router(generations.router)
    app.include_router(files.router)
    app.include_router(vector_stores.router)
    app.include_router(agents.router)
    app.include_router(docs.router)
    app.mount(docs.STATIC_PATH, web.Secured(docs.static_files()), name="vendor")
    if gateway.config.server.web:
        app.include_router(web.router)
        app.mount(web.STATIC_PATH, web.static_files(), name="web")
    app.openapi = lambda: openapi.build(app)  # type: ignore[method-assign]
    return app
