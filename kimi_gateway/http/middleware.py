"""Request ids and the one structured log line per request (pure ASGI, so streaming is untouched)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kimi_gateway.ids import new_id
from kimi_gateway.logs import event, logger, request_id

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
    client_closed: bool = False


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        info = RequestInfo(request_id=new_id("req_"))
        scope.setdefault("state", {})["log"] = info
        request_id.set(info.request_id)
        header = (b"x-request-id", info.request_id.encode())
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if logger.isEnabledFor(logging.INFO):
                self._log(scope, info, status, start)

    @staticmethod
    def _log(scope: Scope, info: RequestInfo, status: int, start: float) -> None:
        fields = {k: v for k, v in asdict(info).items() if v is not None and k != "client_closed"}
        event(
            "request",
            logging.INFO,
            method=scope["method"],
            path=scope["path"],
            status=CLIENT_CLOSED if info.client_closed else status,
            latency_ms=round((time.perf_counter() - start) * 1000, 2),
            **fields,
        )
