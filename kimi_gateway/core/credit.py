"""A generation request's credit hold: what it may cost before it runs (held at admission), and again
once media intake has shaped it. Settlement is the exchange's (core/exchange.py), from the outcome.

Requests without a key (the loopback bootstrap, before any key exists) are not accounted.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable

from kimi_gateway.accounts.billing import Accountant, Ticket
from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.accounts.pricing import worst_case_nano
from kimi_gateway.errors import APIError
from kimi_gateway.routing.attempts import RoutedGeneration
from kimi_gateway.routing.features import prompt_token_bound
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
    accounts: Accountant,
    key: KeyRecord,
    body: ChatCompletionRequest,
    routed: RoutedGeneration,
    generation_id: str,
    headers: Iterable[tuple[bytes, bytes]],
) -> Ticket:
    referer, title = app_headers(headers)
    return await accounts.admit(
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
    accounts: Accountant,
    ticket: Ticket,
    body: ChatCompletionRequest,
    routed: RoutedGeneration,
    spent: int = 0,
) -> None:
    """The request as it now stands (after media intake; before a tool loop's next model call, with what
    its calls so far cost: `spent`), priced again: its hold grows if that is more than it holds."""
    await accounts.top_up(
        ticket,
        [c.endpoint.pricing for c in routed.candidates],
        _prompt_tokens(body, routed),
        _max_tokens(body, routed),
        spent,
    )


def worst_case(body: ChatCompletionRequest, routed: RoutedGeneration) -> int:
    """The most the model call can cost, nano-dollars."""
    return worst_case_nano(
        [c.endpoint.pricing for c in routed.candidates],
        _prompt_tokens(body, routed),
        _max_tokens(body, routed),
    )


class Spending:
    """A request's credit across all its model and tool calls: one tool loop's, or a swarm run's several
    loops calling at once (core/swarm.py). One hold (the ticket's) covers what every loop has spent plus
    each call under way. Each loop has a key of its own (`key()`: never an object's id, which a later loop
    may reuse); its reservation counts the others', set before it awaits anything, and top-ups go one at a
    time (each sends the hold's growth from the ticket's current hold: two at once would both count it).
    `limit`: the run's own `max_cost`, below the balance."""

    def __init__(self, accounts: Accountant, ticket: Ticket | None, limit: int | None = None) -> None:
        self.accounts, self.ticket, self.limit = accounts, ticket, limit
        self._spent: dict[int, int] = {}  # per loop: what its finished calls cost
        self._pending: dict[int, int] = {}  # per loop: the worst case of its call under way
        self._keys = itertools.count(1)
        self._topping = asyncio.Lock()
        self.refused: str | None = None  # why the last call refused was: "credit" or "max_cost"

    def key(self) -> int:
        return next(self._keys)

    async def reserve(
        self, me: int, body: ChatCompletionRequest, routed: RoutedGeneration, spent: int
    ) -> bool:
        """Room for loop `me`'s next model call, `spent` being what its calls so far cost (with the fees
        of tool calls about to run): False (nothing held) when the balance or the run's limit says no."""
        worst = worst_case(body, routed)
        others = sum(v for k, v in self._spent.items() if k != me)
        others += sum(v for k, v in self._pending.items() if k != me)
        if self.limit is not None and others + spent + worst > self.limit:
            self.refused = "max_cost"
            return False
        before = self._spent.get(me, 0), self._pending.get(me, 0)
        self._spent[me], self._pending[me] = spent, worst
        if self.ticket is None:
            return True
        try:
            async with self._topping:
                # Counted again under the lock: what the others hold may have grown meanwhile.
                others = sum(v for k, v in self._spent.items() if k != me)
                others += sum(v for k, v in self._pending.items() if k != me)
                await top_up(self.accounts, self.ticket, body, routed, others + spent)
        except APIError as exc:
            self._spent[me], self._pending[me] = before
            if exc.status != 402:
                raise
            self.refused = "credit"
            return False
        except BaseException:
            self._spent[me], self._pending[me] = before
            raise
        return True

    def settle(self, me: int, spent: int) -> None:
        """Loop `me` ended, however: what it spent stays counted, nothing is under way."""
        self._spent[me] = spent
        self._pending.pop(me, None)
