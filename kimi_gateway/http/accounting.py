"""Between the chat route and the accountant: what a request may cost before it runs, what it did after.

Requests without a key (the loopback bootstrap, before any key exists) are not accounted.
"""

from __future__ import annotations

from starlette.requests import Request

from kimi_gateway.accounts.billing import Outcome, Ticket
from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.http.middleware import RequestInfo
from kimi_gateway.routing.attempts import RoutedGeneration
from kimi_gateway.runtime import Gateway
from kimi_gateway.schema.chat import ChatCompletionRequest

DEFAULT_MAX_TOKENS = 1024
# Bounds on the app attribution headers, as stored (and shown on model pages): a longer value is cut here,
# at the edge, never refused, and never reaches the database whole.
MAX_REFERER, MAX_TITLE = 500, 200


async def admit(
    request: Request,
    gateway: Gateway,
    body: ChatCompletionRequest,
    routed: RoutedGeneration,
    generation_id: str,
) -> None:
    state = request.scope["state"]  # the dict itself: `request.state` builds a wrapper on first use
    key: KeyRecord | None = state["key"]
    if key is None:
        return
    candidates = routed.candidates
    max_tokens = body.requested_max_tokens or max(
        (c.card.defaults.max_tokens or DEFAULT_MAX_TOKENS for c in candidates), default=DEFAULT_MAX_TOKENS
    )
    # One pass over the raw headers (first of each wins), rather than building a Headers object.
    referer = fallback = title = None
    for name, value in request.scope["headers"]:
        if name == b"http-referer" and referer is None:
            referer = value[:MAX_REFERER].decode("latin-1")
        elif name == b"referer" and fallback is None:
            fallback = value[:MAX_REFERER].decode("latin-1")
        elif name == b"x-title" and title is None:
            title = value[:MAX_TITLE].decode("latin-1")
    state["ticket"] = await gateway.accounts.admit(
        generation_id,
        key,
        body.model,
        [c.endpoint.pricing for c in candidates],
        routed.prompt_tokens,
        max_tokens,
        body.stream,
        app_referer=referer or fallback,
        app_title=title,
    )


def finish(gateway: Gateway, ticket: Ticket, info: RequestInfo, status_code: int) -> None:
    if info.client_closed:
        status = "cancelled"
    elif status_code >= 400 or info.finish_reason == "error":
        status = "error"
    else:
        status = "success"
    outcome = Outcome(
        status=status,
        model=info.model or ticket.model,
        provider=info.provider,
        finish_reason=info.finish_reason,
        prompt_tokens=info.prompt_tokens or 0,
        completion_tokens=info.completion_tokens or 0,
        cached_tokens=info.cached_tokens or 0,
        reasoning_tokens=info.reasoning_tokens or 0,
        cost=info.cost_nano or 0,
        ttft_ms=info.ttft_ms,
    )
    gateway.accounts.finish(ticket, outcome)
