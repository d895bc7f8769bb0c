"""The generation routes, each path with its wire format, declared once: `FastPath` (http/app.py) serves
them before the framework sees them, and the same table registers them on the FastAPI app, where they only
describe themselves in /docs and /openapi.json."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.http.formats.anthropic import MessagesFormat
from kimi_gateway.http.formats.base import WireFormat
from kimi_gateway.http.formats.chat import ChatFormat
from kimi_gateway.http.formats.responses import ResponsesFormat
from kimi_gateway.http.formats.text import TextFormat
from kimi_gateway.http.routes.bodies import json_body


@dataclass(frozen=True, slots=True)
class GenerationRoute:
    path: str
    format: type[WireFormat]
    tag: str
    summary: str
    body: str  # the request body's schema, by its name among the document's components
    documented: bool = True  # an alias (Anthropic's under /anthropic) is served, not listed


ROUTES = (
    GenerationRoute(
        "/v1/chat/completions", ChatFormat, "chat", "Create a chat completion", "ChatCompletionRequest"
    ),
    GenerationRoute(
        "/v1/completions",
        TextFormat,
        "completions",
        "Continue a prompt (the legacy completions API)",
        "CompletionRequest",
    ),
    GenerationRoute("/v1/messages", MessagesFormat, "anthropic", "Create a message", "MessagesRequest"),
    GenerationRoute(
        "/anthropic/v1/messages", MessagesFormat, "anthropic", "Create a message", "MessagesRequest", False
    ),
    GenerationRoute("/v1/responses", ResponsesFormat, "responses", "Create a response", "ResponsesRequest"),
)

FORMATS: dict[str, type[WireFormat]] = {route.path: route.format for route in ROUTES}


async def _described(request: Request) -> Response:
    """Never reached: FastPath serves these routes before the framework sees them."""
    raise RuntimeError(f"{request.url.path} is served by FastPath (http/app.py), not the framework")


def register(app: FastAPI) -> None:
    """The routes on the framework's app, for the API description."""
    for route in ROUTES:
        app.add_api_route(
            route.path,
            _described,
            methods=["POST"],
            tags=[route.tag],
            summary=route.summary,
            openapi_extra=json_body(route.body),
            include_in_schema=route.documented,
            name=route.path,
        )
