"""The accountant: admits a request (rate limits, then a credit hold) and settles it when it ends.

Data flows one way: the HTTP layer asks `admit` before the first provider is tried and calls `finish`
after the last byte has gone out; nothing here touches the request or response bodies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from kimi_gateway.accounts.admission import Admission
from kimi_gateway.accounts.cache import RefreshingCache
from kimi_gateway.accounts.changes import ACCOUNT, Changes
from kimi_gateway.accounts.holds import HoldRequest, Holds, Shortfall
from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.accounts.ledger import RECHARGE, Ledger
from kimi_gateway.accounts.pricing import affordable_tokens, worst_case_nano
from kimi_gateway.accounts.recorder import Recorder
from kimi_gateway.accounts.tiers import Tier, tier_for
from kimi_gateway.catalog import Pricing
from kimi_gateway.errors import APIError
from kimi_gateway.ids import new_id
from kimi_gateway.limits import Decision, Window
from kimi_gateway.money import nano
from kimi_gateway.outcome import GenerationOutcome, Settled
from kimi_gateway.providers.events import Usage
from kimi_gateway.storage.rows import GenerationRow, row_of


@dataclass(slots=True)
class Ticket:
    """One admitted request: what it holds, until `finish`."""

    id: str  # the generation id, which is the completion's id
    key: KeyRecord
    tier: Tier
    hold: int
    model: str
    streamed: bool
    app_referer: str | None
    app_title: str | None
    created_at: float
    started: float


log = logging.getLogger(__name__)


def _account_bucket(account_id: str) -> str:
    return "a:" + account_id


def _windows(key: KeyRecord, tier: Tier) -> list[Window]:
    """The requests-a-minute windows a request counts against: its account's tier, and its key's own."""
    windows = [Window(_account_bucket(key.account_id), tier.rpm)]
    if key.rpm:
        windows.append(Window("k:" + key.hash, key.rpm))
    return windows


class Accountant:
    def __init__(
        self,
        ledger: Ledger,
        holds: Holds,
        admission: Admission,
        recorder: Recorder,
        tiers: Sequence[Tier],
        changes: Changes | None = None,
        cache_seconds: float = 5.0,
        cache_grace_seconds: float = 30.0,
    ) -> None:
        self.ledger = ledger
        self.holds = holds
        self.admission = admission
        self.recorder = recorder
        self.tiers = tuple(tiers)
        self.changes = changes or Changes(None, "")
        # A recharge made elsewhere lifts the tier here within `cache_seconds` (at once with Redis).
        self._tiers: RefreshingCache[str, Tier] = RefreshingCache(
            self._load_tier, cache_seconds, stale_grace=cache_grace_seconds
        )
        self._settling: list[tuple[Ticket, int]] = []

    def forget(self, account_id: str | None) -> None:
        """An account changed elsewhere (None: any may have)."""
        if account_id is None:
            self._tiers.clear()
        else:
            self._tiers.drop(account_id)

    async def tier(self, account_id: str) -> Tier:
        return await self._tiers.get(account_id)

    async def _load_tier(self, account_id: str) -> Tier:
        recharged = (await self.ledger.totals(account_id)).recharged
        return tier_for(recharged / 1e9, self.tiers)

    async def credit(self, account_id: str, amount: Decimal, kind: str = RECHARGE, note: str = "") -> str:
        entry = await self.ledger.credit(account_id, amount, kind, note)
        await self.holds.credited(account_id, nano(amount))
        self._tiers.drop(account_id)
        await self.changes.publish(ACCOUNT, account_id)
        return entry

    async def admit(
        self,
        generation_id: str,
        key: KeyRecord,
        model: str,
        prices: Sequence[Pricing],
        prompt_tokens: int,
        max_tokens: int,
        streamed: bool,
        app_referer: str | None = None,
        app_title: str | None = None,
    ) -> Ticket:
        """Take a rate-limit slot and hold the worst-case cost, or raise the 429 or 402 that says why not
        (or 503 when the database, past the caches' grace, or Redis is unreachable: fail closed)."""
        account = key.account_id
        worst = worst_case_nano(prices, prompt_tokens, max_tokens)
        limit = nano(key.credit_limit) if key.credit_limit is not None else None
        try:
            tier = await self.tier(account)
            verdict = await self.admission.admit(
                generation_id,
                _account_bucket(account),
                tier.concurrency,
                _windows(key, tier),
                HoldRequest(generation_id, account, key.hash, worst, limit),
            )
        except (SQLAlchemyError, RedisError, OSError):
            log.warning("admission could not reach its stores", exc_info=True)
            raise _unavailable() from None
        if isinstance(verdict, Shortfall):
            raise _insufficient(verdict.by, prices, prompt_tokens, max_tokens, verdict.available)
        if not verdict.allowed:
            raise _rate_limited(verdict, tier)
        ticket = Ticket(
            generation_id,
            key,
            tier,
            worst,
            model,
            streamed,
            app_referer,
            app_title,
            time.time(),
            time.perf_counter(),
        )
        self.recorder.opened(
            {
                "id": generation_id,
                "account_id": account,
                "key_hash": key.hash,
                "amount": worst,
                "model": model,
                "streamed": streamed,
                "app_referer": app_referer,
                "app_title": app_title,
                "created_at": ticket.created_at,
            }
        )
        return ticket

    @asynccontextmanager
    async def limited(self, key: KeyRecord) -> AsyncIterator[None]:
        """The account's rate limits (requests a minute, concurrency) around work that is not a generation
        (an upload, a token count): admitted like one, before the work, but nothing held or charged."""
        account = key.account_id
        slot = new_id("lim_")
        bucket = _account_bucket(account)
        try:
            tier = await self.tier(account)
            windows = _windows(key, tier)
            verdict = await self.admission.admit(
                slot, bucket, tier.concurrency, windows, HoldRequest(slot, account, key.hash, 0, None)
            )
        except (SQLAlchemyError, RedisError, OSError):
            log.warning("admission could not reach its stores", exc_info=True)
            raise _unavailable() from None
        if isinstance(verdict, Shortfall):
            raise _insufficient(verdict.by, [], 0, 0, verdict.available)
        if not verdict.allowed:
            raise _rate_limited(verdict, tier)
        try:
            yield
        finally:
            self.admission.finish(slot, bucket, account, key.hash, 0)

    async def top_up(
        self, ticket: Ticket, prices: Sequence[Pricing], prompt_tokens: int, max_tokens: int, spent: int = 0
    ) -> None:
        """Grow the request's hold to `spent` (what its earlier model calls and tool calls cost: a tool
        loop's) plus the worst case of what comes next, or raise the 402 that says it does not fit.
        After media intake, and before each step of a tool loop."""
        worst = spent + worst_case_nano(prices, prompt_tokens, max_tokens)
        if worst <= ticket.hold:
            return
        key = ticket.key
        limit = nano(key.credit_limit) if key.credit_limit is not None else None
        short = await self.admission.top_up(
            HoldRequest(ticket.id, key.account_id, key.hash, worst - ticket.hold, limit)
        )
        if short is not None:
            raise _insufficient(
                short.by, prices, prompt_tokens, max_tokens, short.available + ticket.hold - spent
            )
        ticket.hold = worst

    def finish(
        self,
        ticket: Ticket,
        outcome: GenerationOutcome | None,
        status: Settled,
        steps: Sequence[GenerationOutcome] = (),
    ) -> None:
        """Record how the generation ended (None: before it was routed). Its hold settles and its slot
        frees once that record is in the journal, at the end of this turn of the event loop: a crash in
        between loses nothing, and the request waits for neither.

        A tool loop's request (`steps`: its model calls, a swarm's sub-agents' too, the first named by
        the ticket; `outcome`: its final call) is one charge, their sum, and one record per model call."""
        if steps:
            # Each model call is settled by its own end: one that finished is charged (the provider
            # charged for it, and a streamed response relayed it) whatever came after; one that failed
            # is not; the request's final call (`outcome`) ends as the request did. Tools that ran are
            # charged in every case.
            ends = [status if step is outcome else _ended(step) for step in steps]
            rows = [
                generation_row(ticket, step, end, _cost(step, end), i, looped=True)
                for i, (step, end) in enumerate(zip(steps, ends, strict=True))
            ]
            cost = sum(row["cost"] for row in rows)
            self.recorder.closed(rows[0], cost, rows[1:])
        else:
            cost = _cost(outcome, status) if outcome is not None else 0
            self.recorder.closed(generation_row(ticket, outcome, status, cost), cost)
        self._settling.append((ticket, cost))
        if len(self._settling) == 1:
            self.recorder.after_journaled(self._settle_journaled)

    def _settle_journaled(self) -> None:
        # Every request that finished in the same turn, settled in place: neither backend's `finish`
        # waits on anything (Redis settlements are queued for one batch), so no task is needed.
        batch, self._settling = self._settling, []
        for ticket, cost in batch:
            account = ticket.key.account_id
            try:
                self.admission.finish(ticket.id, _account_bucket(account), account, ticket.key.hash, cost)
            except Exception:
                log.exception("settling %s failed; its hold expires or is released at recovery", ticket.id)

    async def generation(self, generation_id: str) -> GenerationRow | None:
        pending = self.recorder.pending(generation_id)
        if pending is not None:
            return pending
        record = await self.ledger.generation(generation_id)
        return row_of(record) if record is not None else None

    async def close(self) -> None:
        if self._settling:
            self.recorder.journal_now()
        await self.admission.close()
        await self.recorder.stop()
        await self.holds.close()


def _ended(step: GenerationOutcome) -> Settled:
    """How a model call that was not the request's last ended, by itself."""
    if step.client_closed:
        return "cancelled"
    if step.usage is None or step.finish_reason == "error":
        return "error"
    return "success"


def _cost(outcome: GenerationOutcome, status: Settled) -> int:
    """What a model call is charged: nothing if it failed or produced nothing (its tool calls, which
    ran, are charged whatever the model did next)."""
    usage = outcome.usage
    produced = usage is not None and usage.completion_tokens > 0 and status != "error"
    return ((outcome.cost_nano or 0) if produced else 0) + outcome.tool_cost_nano


def generation_row(
    ticket: Ticket,
    outcome: GenerationOutcome | None,
    status: Settled,
    cost: int,
    step: int = 0,
    *,
    looped: bool = False,
) -> GenerationRow:
    """The record of a model call: the ticket's own, or (`step` > 0) a later call of its tool loop
    (`looped`: every call of a loop names the request's id, the ticket's)."""
    usage = (outcome.usage if outcome is not None else None) or Usage()
    return {
        "id": ticket.id if step == 0 else f"{ticket.id}-{step + 1}",
        "account_id": ticket.key.account_id,
        "key_hash": ticket.key.hash,
        "model": outcome.model if outcome is not None else ticket.model,
        "provider": outcome.provider_name if outcome is not None else None,
        "status": status,
        "finish_reason": outcome.finish_reason if outcome is not None else None,
        "streamed": ticket.streamed,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cost": cost,
        "latency_ms": round((time.perf_counter() - ticket.started) * 1000, 2),
        "ttft_ms": outcome.ttft_ms if outcome is not None else None,
        "app_referer": ticket.app_referer,
        "app_title": ticket.app_title,
        "created_at": ticket.created_at,
        "request_id": ticket.id if looped else None,
        "tool_calls": outcome.tool_calls if outcome is not None else 0,
        "tool_cost": outcome.tool_cost_nano if outcome is not None else 0,
    }


def _unavailable() -> APIError:
    return APIError(
        503,
        "Rate limits and credits cannot be checked right now (the gateway's database or Redis is "
        "unreachable). Retry shortly.",
        type="service_unavailable",
        code="accounting_unavailable",
        headers={"Retry-After": "1"},
    )


def _rate_limited(decision: Decision, tier: Tier) -> APIError:
    now_ms = time.time_ns() // 1_000_000
    wait = decision.retry_after(now_ms)
    if decision.reason == "concurrency":
        message = (
            f"Your account (tier {tier.tier}) request reached max concurrency: {decision.limit}, "
            f"please try again after {wait} seconds"
        )
    else:
        message = (
            f"Your account (tier {tier.tier}) request reached max request: {decision.limit} per minute, "
            f"please try again after {wait} seconds"
        )
    return APIError(
        429,
        message,
        type="rate_limit_reached_error",
        code="rate_limit_exceeded",
        headers={
            "Retry-After": str(wait),
            "X-RateLimit-Limit": str(decision.limit),
            "X-RateLimit-Remaining": str(decision.remaining),
            "X-RateLimit-Reset": str(decision.reset_ms),
        },
    )


def _insufficient(
    by: str, prices: Sequence[Pricing], prompt_tokens: int, max_tokens: int, available: int
) -> APIError:
    affordable = affordable_tokens(prices, prompt_tokens, available)
    whose = "your key's credit limit" if by == "key" else "your account's credits"
    if affordable > 0:
        message = (
            f"This request requires more credits, or fewer max_tokens. You requested up to {max_tokens} "
            f"tokens, but {whose} can only afford {affordable}. Add credits with `kimi-gateway credits add` "
            "or POST /api/v1/credits/add."
        )
    else:
        message = (
            f"Insufficient credits: {whose} cannot cover this request's prompt. Add credits with "
            "`kimi-gateway credits add` or POST /api/v1/credits/add."
        )
    return APIError(
        402,
        message,
        type="insufficient_quota",
        code="insufficient_credits",
        metadata={"requested_max_tokens": max_tokens, "affordable_tokens": affordable, "limited_by": by},
    )
