"""Between a chat request and the accountant: what it may cost before it runs, what it did after.

Requests without a key (the loopback bootstrap, before any key exists) are not accounted.
"""

from __future__ import annotations

from collections.abc import Iterable

from kimi_gateway.accounts.billing import Outcome, Ticket
from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.http.completions import ResponseMeta
from kimi_gateway.routing.attempts import RoutedGeneration
from kimi_gateway.routing.features import prompt_token_bound
from kimi_gateway.runtime import Gateway
from kimi_gateway.schema.chat import ChatCompletionRequest

DEFAULT_MAX_TOKENS = 1024
# Bounds on the app attribution headers, as stored (and shown on model pages): a longer value is cut here,
# at the edge, never refused, and never reaches the database whole.
MAX_REFERER, MAX_TITLE = 500, 200


def _max_tokens(body: ChatCompletionRequest, routed: RoutedGeneration) -> int:
    """The most the answer can be: what the request asked for, else what the model's card sends upstream,
    else the whole context (the embedded engine, asked for nothing, generates to the context's end);
    once for each of the `n` choices."""
    each = body.requested_max_tokens or max(
        (c.card.defaults.max_tokens or c.endpoint.context_length for c in routed.candidates),
        default=DEFAULT_MAX_TOKENS,
    )
    return each * body.n


def _prompt_tokens(body: ChatCompletionRequest, routed: RoutedGeneration) -> int:
    """The most the prompt can be: its byte bound, but never over the largest context that could take it
    (a longer prompt is refused, not served)."""
    context = max((c.endpoint.context_length for c in routed.candidates), default=0)
    bound = prompt_token_bound(body)
    return min(bound, context) if context else bound


def app_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """(app, title) as OpenRouter identifies apps: `HTTP-Referer` names the app (required: a browser's own
    `Referer` does not list one), `X-Title` or `X-OpenRouter-Title` its name. One pass over the raw headers
    (the first of each wins), each value bounded."""
    referer = title = None
    for name, value in headers:
        if name == b"http-referer" and referer is None:
            referer = normalized_app(value[: MAX_REFERER + 16].decode("latin-1"))
        elif name in (b"x-title", b"x-openrouter-title") and title is None:
            title = value[:MAX_TITLE].decode("latin-1").strip() or None
    return referer, title


def normalized_app(referer: str) -> str | None:
    """One app, however its URL is spelled: no scheme, no trailing slash, the host in lower case."""
    value = referer.strip()
    scheme, sep, rest = value.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        value = rest
    host, slash, path = value.partition("/")
    value = (host.lower() + slash + path).rstrip("/")
    return value[:MAX_REFERER] or None


async def admit(
    gateway: Gateway,
    key: KeyRecord,
    body: ChatCompletionRequest,
    routed: RoutedGeneration,
    generation_id: str,
    headers: Iterable[tuple[bytes, bytes]],
) -> Ticket:
    referer, title = app_headers(headers)
    return await gateway.accounts.admit(
        generation_id,
        key,
        body.model,
        [c.endpoint.pricing for c in routed.candidates],
        _prompt_tokens(body, routed),
        _max_tokens(body, routed),
        body.stream,
        app_referer=referer,
        app_title=title,
    )


async def top_up(
    gateway: Gateway, ticket: Ticket, body: ChatCompletionRequest, routed: RoutedGeneration
) -> None:
    """The request as media intake left it, priced again: its hold grows if it turned out larger."""
    await gateway.accounts.top_up(
        ticket,
        [c.endpoint.pricing for c in routed.candidates],
        _prompt_tokens(body, routed),
        _max_tokens(body, routed),
    )


def finish(gateway: Gateway, ticket: Ticket, meta: ResponseMeta | None, status_code: int) -> None:
    """Settle from what the generation reported (`meta`), never from the log record."""
    usage = meta.usage if meta is not None else None
    if meta is not None and meta.client_closed:
        status = "cancelled"
    elif status_code >= 400 or (meta is not None and meta.finish_reason == "error"):
        status = "error"
    else:
        status = "success"
    outcome = Outcome(
        status=status,
        model=meta.model if meta is not None else ticket.model,
        provider=(meta.served_by or meta.provider) if meta is not None else None,
        finish_reason=meta.finish_reason if meta is not None else None,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        cached_tokens=usage.cached_tokens if usage else 0,
        reasoning_tokens=usage.reasoning_tokens if usage else 0,
        cost=(meta.cost_nano or 0) if meta is not None else 0,
        ttft_ms=meta.ttft_ms if meta is not None else None,
    )
    gateway.accounts.finish(ticket, outcome)
