"""Trying candidates in order until one serves: failover before the first event, none after it."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kimi_gateway.errors import APIError, UpstreamError
from kimi_gateway.providers.base import Generation
from kimi_gateway.providers.events import Done, Event
from kimi_gateway.routing.health import Turn, counts_against
from kimi_gateway.routing.plan import Candidate
from kimi_gateway.routing.sticky import conversation_key, named_conversation
from kimi_gateway.schema.chat import ChatCompletionRequest

if TYPE_CHECKING:
    from kimi_gateway.routing.router import Router

# Local-engine answers that mean "busy", so another endpoint may serve instead.
_BUSY = {429, 503}


@dataclass(slots=True)
class StickyState:
    request: ChatCompletionRequest
    account: str
    provider: str | None = None  # where it was sticking when this request came in
    _key: str | None = None

    @property
    def explicit(self) -> bool:
        """The client named the conversation (session_id / prompt_cache_key)."""
        return bool(named_conversation(self.request))

    @property
    def key(self) -> str:
        """Hashed on first use: most requests neither find a sticking provider nor start sticking."""
        if self._key is None:
            self._key = conversation_key(self.request, self.account)
        return self._key


@dataclass(frozen=True, slots=True)
class Attempt:
    """One endpoint tried for a request, and how it failed (a request's attempts are its failures)."""

    provider: str
    model: str
    status: int  # the provider's own status where it gave one
    message: str
    kind: str  # status, timeout, connection, circuit_open, busy (metrics label it)
    retry_after: float | None = None

    def public(self) -> dict[str, Any]:
        """As the error's `metadata.attempts` shows it (OpenRouter's fields)."""
        shown: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "status": self.status,
            "message": self.message,
        }
        if self.retry_after is not None:
            shown["retry_after"] = self.retry_after
        return shown


def all_failed(attempts: list[Attempt], errors: list[APIError]) -> APIError:
    if len(errors) == 1 and len(attempts) == 1:
        return errors[0]  # one endpoint, one answer: the client gets it as it was
    statuses = [a.status for a in attempts]
    retry_after = [a.retry_after for a in attempts if a.retry_after is not None]
    if statuses and all(s == 429 for s in statuses):
        status, code = 429, "capacity_exhausted"
    elif all(a.kind in {"timeout", "connection", "circuit_open", "busy"} for a in attempts):
        status, code = 503, "temporarily_unavailable"
    else:
        status, code = 502, "provider_error"
    summary = "; ".join(f"{a.provider} ({a.status}): {a.message}" for a in attempts)
    headers = {"Retry-After": str(max(1, round(min(retry_after))))} if retry_after else None
    return APIError(
        status,
        f"Every provider failed: {summary}",
        type="upstream_error",
        code=code,
        headers=headers,
        metadata={"attempts": [a.public() for a in attempts]},
    )


def _kind(error: APIError) -> str:
    if isinstance(error, UpstreamError):
        if error.upstream_status is None:
            return "timeout" if error.status == 504 else "connection"
        return "status"
    return "busy" if error.status in _BUSY else "status"


class RoutedGeneration:
    """The events of whichever candidate serves first; `served` says which, once known.

    `buffered` (a client that is not streaming) holds a candidate's events until it has finished, so a
    failure at any point can still move on to the next candidate.
    """

    def __init__(
        self, router: Router, request: ChatCompletionRequest, candidates: list[Candidate], buffered: bool
    ) -> None:
        self._router = router
        self._request = request
        self._candidates = candidates
        self.candidates: tuple[Candidate, ...] = tuple(candidates)
        self.prompt_tokens = 0  # the estimate routing filtered by; accounting holds credit against it
        self._buffered = buffered
        self._current: Generation | None = None
        self._cancelled = False
        self.served: Candidate | None = None
        self.sticky: StickyState | None = None
        self.attempts: list[Attempt] = []
        self._errors: list[APIError] = []
        # Seconds spent waiting on providers (every attempt's, to its first events; to its last, when
        # buffered): the rest of a request's time is the gateway's own overhead.
        self.upstream_seconds = 0.0

    def cancel(self) -> None:
        self._cancelled = True
        if self._current is not None:
            self._current.cancel()

    def _fail(self, candidate: Candidate, error: APIError, turn: Turn) -> None:
        provider = candidate.endpoint.provider
        self._errors.append(error)
        retry_after = error.retry_after if isinstance(error, UpstreamError) else None
        if retry_after is None and "Retry-After" in error.headers:
            retry_after = float(error.headers["Retry-After"])
        if self.sticky is not None and self.sticky.provider == provider:
            self._router.sticky.forget(self.sticky.key)  # a failing provider no longer holds the conversation
        # Only the provider's own failures count against it: not the local engine's full queue
        # (back-pressure), nor an upstream's verdict on the client's request (400, 404, 413, 422).
        if (
            isinstance(error, UpstreamError)
            and error.counts_against_provider
            and counts_against(error.upstream_status)
        ):
            turn.failed(retry_after)
            rate_limited = error.upstream_status == 429
            self._router.stats.record(provider, candidate.card.id, False, rate_limited=rate_limited)
        status = error.upstream_status or error.status if isinstance(error, UpstreamError) else error.status
        self.attempts.append(
            Attempt(provider, candidate.card.id, status, error.message, _kind(error), retry_after)
        )

    def _after_success(self, candidate: Candidate, cached_tokens: int) -> None:
        sticky = self.sticky
        if sticky is None or not candidate.endpoint.caches_cheaper:
            return
        provider = candidate.endpoint.provider
        if sticky.provider == provider:
            self._router.stats.record_sticky(provider, candidate.card.id, cached_tokens)
        # With a key the client chose, stick after any success; otherwise once a cache hit proves it.
        if sticky.explicit or cached_tokens > 0:
            self._router.sticky.stick(sticky.key, provider)

    async def _start(self, candidate: Candidate, turn: Turn) -> _Started | APIError:
        """Start one candidate and read its first batch (every batch, when buffered): what it began, or
        the error it failed with (recorded as an attempt)."""
        started = time.perf_counter()
        stream: AsyncIterator[list[Event]] | None = None
        try:
            generation = await self._router.start(self._request, candidate)
            self._current = generation
            stream = generation.events()
            held = [await anext(stream)]
            first_at = time.perf_counter()
            if self._buffered:
                held.extend([batch async for batch in stream])
        except StopAsyncIteration:
            self.upstream_seconds += time.perf_counter() - started
            error = APIError(502, f"{candidate.endpoint.provider}: no output", type="upstream_error")
            self._fail(candidate, error, turn)
            return _NoOutput(error)
        except APIError as error:
            self.upstream_seconds += time.perf_counter() - started
            if stream is not None:
                await stream.aclose()  # type: ignore[attr-defined]
            self._fail(candidate, error, turn)
            return error
        self.upstream_seconds += time.perf_counter() - started
        return _Started(stream, held, started, first_at)

    async def events(self) -> AsyncGenerator[list[Event], None]:
        """Candidates in order until one starts; then its stream, relayed. Each candidate's turn ends
        with a verdict for the breaker or a release, however the request ends."""
        health = self._router.health
        skip_model: str | None = None
        last_model = self._candidates[-1].card.id if self._candidates else None
        order = list(self._candidates)
        # Candidates passed over for their provider's health (a 429's cool-down, an open circuit). If every
        # other one then fails, they are tried after all: the policy protects providers from the crowd,
        # but one request with nowhere else to go still gets its chance.
        passed: list[Candidate] = []
        last_resort = len(order)  # candidates from this index on are the ones passed over
        index = 0
        while True:
            if index == len(order):
                if not passed or not self._errors or index > last_resort:
                    break
                last_resort = index
                order.extend(passed)
                passed = []
            candidate = order[index]
            index += 1
            provider = candidate.endpoint.provider
            if self._cancelled:
                return
            if candidate.card.id == skip_model:
                continue
            if index <= last_resort and not health.acquire(provider):
                state = "cooling down after a 429" if health.cooling_down(provider) else "circuit open"
                self.attempts.append(Attempt(provider, candidate.card.id, 503, state, "circuit_open"))
                passed.append(candidate)
                continue
            with Turn(health, provider) as turn:
                outcome = await self._start(candidate, turn)
                if isinstance(outcome, APIError):
                    if isinstance(outcome, _NoOutput):
                        continue
                    retryable = (
                        outcome.retryable if isinstance(outcome, UpstreamError) else outcome.status in _BUSY
                    )
                    if retryable:
                        continue
                    if candidate.card.id != last_model:
                        skip_model = candidate.card.id  # any error moves a models[] fallback on to the next
                        continue
                    raise outcome
                self.served = candidate
                done: Done | None = None
                try:
                    for batch in outcome.held:
                        if isinstance(batch[-1], Done):
                            done = batch[-1]
                        yield batch
                    if not self._buffered:
                        async for batch in outcome.stream:
                            if isinstance(batch[-1], Done):
                                done = batch[-1]
                            yield batch
                except APIError as error:
                    self._fail(candidate, error, turn)
                    raise
                finally:
                    if not self._buffered:
                        await outcome.stream.aclose()  # type: ignore[attr-defined]
                elapsed = time.perf_counter() - outcome.first_at
                turn.succeeded()
                completion = done.usage.completion_tokens if done else 0
                cached = done.usage.cached_tokens if done else 0
                self._router.stats.record(
                    provider,
                    candidate.card.id,
                    True,
                    ttft_ms=(outcome.first_at - outcome.started) * 1000,
                    tokens_per_second=completion / elapsed if completion and elapsed > 0 else None,
                )
                self._after_success(candidate, cached)
                return
        if self._cancelled:
            return
        raise all_failed(self.attempts, self._errors)


class _NoOutput(APIError):
    """A candidate whose stream ended before its first event: always moves on to the next."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.status, error.message, type=error.type)


@dataclass(slots=True)
class _Started:
    stream: AsyncIterator[list[Event]]
    held: list[list[Event]]
    started: float
    first_at: float
