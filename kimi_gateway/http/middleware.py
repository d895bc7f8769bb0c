"""Request ids and the one structured log line per request (pure ASGI, so streaming is untouched)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kimi_gateway.ids import new_id
from kimi_gateway.logs import event, logger, request_id

# On every response: a browser must not guess a type other than the one sent.
NOSNIFF = (b"x-content-type-options", b"nosniff")
NO_STORE = (b"cache-control", b"no-store")

# A client that went away before the response finished; nginx's convention.
CLIENT_CLOSED = 499


@dataclass(slots=True)
class RequestInfo:
    """Filled in by the route while it serves the request; logged when the response ends."""

    request_id: str
    account_id: str | None = None
    model: str | None = None
    provider: str | None = None
    stream: bool | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_nano: int | None = None
    finish_reason: str | None = None
    ttft_ms: float | None = None
    # Set only when there is something to say (what was adapted, why a request was refused): one field
    # for them all keeps the common request's log line as cheap as before.
    notes: dict[str, str] | None = None
    client_closed: bool = False


def route_path(scope: Scope) -> str:
    """The path the app's routes see: without the prefix it is mounted under (`--root-path`, a Mount)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


_LOGGED = tuple(f.name for f in fields(RequestInfo) if f.name not in ("client_closed", "notes"))


def begin(scope: Scope) -> RequestInfo:
    """A new request's id and log record, kept in `scope["state"]` for the route to fill in."""
    info = RequestInfo(request_id=new_id("req_"))
    scope.setdefault("state", {})["log"] = info
    request_id.set(info.request_id)
    return info


def request_id_header(info: RequestInfo) -> tuple[bytes, bytes]:
    return (b"x-request-id", info.request_id.encode())


def log_request(scope: Scope, info: RequestInfo, status: int, start: float) -> None:
    """The one log line of a request, when it has ended."""
    if not logger.isEnabledFor(logging.INFO):
        return
    # Not `asdict`: it deep-copies every field, a measurable share of a request's own cost.
    fields = {k: v for k in _LOGGED if (v := getattr(info, k)) is not None}
    if info.notes:
        fields.update(info.notes)
    event(
        "request",
        logging.INFO,
        method=scope["method"],
        path=scope["path"],
        status=CLIENT_CLOSED if info.client_closed else status,
        latency_ms=round((time.perf_counter() - start) * 1000, 2),
        **fields,
    )


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        info = begin(scope)
        header = request_id_header(info)
        status = 500

        extra = [header, NOSNIFF]
        if route_path(scope).startswith("/api/v1/"):
            extra.append(NO_STORE)  # account data, and the one response that carries a new key

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log_request(scope, info, status, start)


class HeadMiddleware:
    """HEAD wherever GET works: the route runs as GET and the body is dropped (its length stays in the
    headers). FastAPI's routes answer only the methods they name."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)
