"""Exception handlers: every failure leaves as OpenAI's error shape, never as a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from kimi_gateway.errors import APIError
from kimi_gateway.http.formats.anthropic_events import error_response as anthropic_error
from kimi_gateway.http.formats.anthropic_events import is_anthropic
from kimi_gateway.http.replies import error_response
from kimi_gateway.http.validation import errors_to_api_error

log = logging.getLogger(__name__)


def error_for(path: str, exc: APIError, scope: Scope | None = None) -> Response:
    """The error in the shape the route's clients read: Anthropic's on its paths, and on the model list
    when the Anthropic SDK calls it (it always sends `anthropic-version`); OpenAI's elsewhere."""
    anthropic = is_anthropic(path) or (
        scope is not None and path.startswith("/v1/models") and _has(scope, b"anthropic-version")
    )
    return anthropic_error(exc) if anthropic else error_response(exc)


def _has(scope: Scope, header: bytes) -> bool:
    return any(name == header for name, _ in scope["headers"])


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return error_for(request.url.path, exc, request.scope)


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # FastAPI prefixes locations with where the value came from ('query', 'path', 'body').
    errors = [{**e, "loc": tuple(e["loc"])[1:]} for e in exc.errors()]
    return error_for(request.url.path, errors_to_api_error(errors), request.scope)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"Unknown request URL: {request.method} {request.url.path}."
        code = "unknown_url"
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed for {request.url.path}."
        code = "method_not_allowed"
        # Every method the path takes, not only those of the first route that matched it.
        allow = {"Allow": ", ".join(_allowed(request))}
        return error_for(request.url.path, APIError(405, message, code=code, headers=allow), request.scope)
    else:
        message, code = str(exc.detail), None
    error = APIError(exc.status_code, message, code=code, headers=dict(exc.headers or {}))
    return error_for(request.url.path, error, request.scope)


def _allowed(request: Request) -> list[str]:
    """Every method some route takes at this path: asked of the routes themselves, as the router would."""
    scope = request.scope
    routes = request.app.routes
    methods = [
        method
        for method in ("DELETE", "GET", "PATCH", "POST", "PUT")
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in routes)
    ]
    if "GET" in methods:
        methods.insert(methods.index("GET") + 1, "HEAD")  # HeadMiddleware answers it
    return methods


def internal_api_error(path: str, exc: BaseException) -> APIError:
    """A failure nobody planned for: logged with its traceback, answered without one."""
    log.error("unhandled error", exc_info=exc, extra={"fields": {"path": path}})
    return APIError(500, "Internal server error.", type="server_error", code="internal_error")


def internal_error(path: str, exc: BaseException) -> Response:
    return error_for(path, internal_api_error(path, exc))


async def unexpected(request: Request, exc: Exception) -> Response:
    return internal_error(request.url.path, exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, unexpected)
