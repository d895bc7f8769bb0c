"""Reading and validating request bodies under a size limit."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kimi_gateway.errors import APIError
from kimi_gateway.http.responses import error_response
from kimi_gateway.http.validation import validation_error

M = TypeVar("M", bound=BaseModel)


def too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"Request body too large: the limit is {limit} bytes.",
        code="request_too_large",
    )


class BodyLimitMiddleware:
    """A running cap on every request body, whatever its framing: Content-Length is checked first, and the
    bytes are counted as they arrive, so a chunked upload (no length given) is refused with 413 as soon
    as it passes the limit, before it is spooled or read into memory."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], tuple[int, APIError]]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, error = self.limit_for(scope)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    await error_response(error)(scope, receive, send)
                    return
                break
        size = 0

        async def counted() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise error
            return message

        await self.app(scope, counted, send)


async def read_body(request: Request, limit: int) -> bytes:
    # The raw headers: `request.headers` would build a Headers object for this one look-up.
    for name, value in request.scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise too_large(limit)
            break
    # ASGI messages read directly: Starlette's `stream()` is an async generator, a cost on every request.
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def parse_body(request: Request, model: type[M], limit: int) -> M:
    body = await read_body(request, limit)
    if not body:
        raise APIError(400, "The request body is empty; a JSON object is expected.", code="invalid_json")
    try:
        # One pass: pydantic parses the JSON and validates it together.
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
