"""The request core's sequence (core/exchange.py), with fake parts where the order of steps matters:
admission before media, settlement on every ending. The behaviour tests drive real processes; these pin
the order, which a real process shows only by its timing."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from kimi_gateway.catalog import Pricing, load_catalog
from kimi_gateway.config import AgentsConfig
from kimi_gateway.core.exchange import Exchange, Parts
from kimi_gateway.core.replay import ReasoningMemory
from kimi_gateway.core.swarm import AgentRuns
from kimi_gateway.errors import APIError
from kimi_gateway.outcome import GenerationOutcome, RequestOutcome
from kimi_gateway.providers.events import Delta, Done, Event, Finish, Usage
from kimi_gateway.schema.chat import ChatCompletionRequest

MODEL = "kimi-k2.5"


def synchronous(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """An async test, run on its own event loop (as the rest of the suite does)."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


PRICING = Pricing(input=1.0, cached_input=0.1, output=2.0)


@dataclass
class Steps:
    """Every call a fake part receives, in order."""

    names: list[str] = field(default_factory=list)
    settled: list[tuple[GenerationOutcome | None, str]] = field(default_factory=list)


class FakeRouted:
    def __init__(self, steps: Steps, batches: list[list[Event]], fail_at: int | None, hang: bool) -> None:
        card = load_catalog().get(MODEL)
        endpoint = SimpleNamespace(
            provider="fake", provider_name="Fake", pricing=PRICING, context_length=1000, caches_cheaper=False
        )
        self.candidates = [SimpleNamespace(card=card, endpoint=endpoint)]
        self.served: Any = None
        self.prompt_tokens = 12
        self.upstream_seconds = 0.0
        self.attempts: list[Any] = []
        self._steps, self._batches, self._fail_at, self._hang = steps, batches, fail_at, hang

    def cancel(self) -> None:
        self._steps.names.append("cancel")

    async def events(self) -> AsyncIterator[list[Event]]:
        self.served = self.candidates[0]
        for i, batch in enumerate(self._batches):
            if i == self._fail_at:
                raise APIError(502, "the provider failed", type="upstream_error")
            yield batch
            if self._hang and i == 0:
                await asyncio.Event().wait()  # a generation that goes on until stopped


class FakeRouter:
    def __init__(self, steps: Steps, **behaviour: Any) -> None:
        self.steps, self.behaviour = steps, behaviour

    def route(
        self, body: ChatCompletionRequest, account: str | None, media_pending: bool = False
    ) -> FakeRouted:
        self.steps.names.append("route")
        return FakeRouted(self.steps, **self.behaviour)


class FakeAccounts:
    def __init__(self, steps: Steps, refuse: bool = False) -> None:
        self.steps, self.refuse = steps, refuse

    async def admit(self, generation_id: str, *args: Any, **kwargs: Any) -> object:
        self.steps.names.append("admit")
        if self.refuse:
            raise APIError(402, "Insufficient credits", code="insufficient_credits")
        return SimpleNamespace(id=generation_id)

    async def top_up(self, *args: Any) -> None:
        self.steps.names.append("top_up")

    def finish(self, ticket: object, outcome: GenerationOutcome | None, status: str) -> None:
        self.steps.names.append("finish")
        self.steps.settled.append((outcome, status))


class FakeMedia:
    def __init__(self, steps: Steps, slow: bool = False) -> None:
        self.steps, self.slow = steps, slow

    async def prepare(self, body: ChatCompletionRequest, card: object, account: str | None) -> None:
        self.steps.names.append("media")
        if self.slow:
            await asyncio.sleep(30)


class FakeMetrics:
    def __init__(self, steps: Steps) -> None:
        self.steps = steps
        self.outcomes: list[RequestOutcome] = []

    def request(self, outcome: RequestOutcome, seconds: float) -> None:
        self.steps.names.append("metrics")
        self.outcomes.append(outcome)


ANSWER: list[list[Event]] = [
    [Delta(content="Hello")],
    [Delta(content=" there")],
    [Finish(0, "stop"), Done(usage=Usage(prompt_tokens=10, completion_tokens=2))],
]


def _exchange(
    steps: Steps,
    *,
    refuse: bool = False,
    slow_media: bool = False,
    batches: list[list[Event]] = ANSWER,
    fail_at: int | None = None,
    hang: bool = False,
    gone: asyncio.Event | None = None,
) -> tuple[Exchange, FakeMetrics]:
    metrics = FakeMetrics(steps)
    parts = Parts(
        catalog=load_catalog(),
        router=FakeRouter(steps, batches=batches, fail_at=fail_at, hang=hang),  # type: ignore[arg-type]
        accounts=FakeAccounts(steps, refuse),  # type: ignore[arg-type]
        media=FakeMedia(steps, slow_media),  # type: ignore[arg-type]
        reasoning=ReasoningMemory(),
        metrics=metrics,  # type: ignore[arg-type]
        strict_rules=False,
        keepalive_seconds=1.0,
        log_prompts=False,
        tools=None,  # type: ignore[arg-type]  (no server-side tools here: tests/test_server_tools.py)
        agents=AgentsConfig(),
        runs=AgentRuns(8, None),
    )
    left = gone or asyncio.Event()

    async def client_gone() -> None:
        await left.wait()

    exchange = Exchange(parts, RequestOutcome("req_test", "/v1/chat/completions"), [], client_gone)
    return exchange, metrics


def _body(image: bool = False, stream: bool = False) -> ChatCompletionRequest:
    content: Any = "Hi"
    if image:
        content = [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ]
    return ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": content}], "stream": stream}
    )


KEY = SimpleNamespace(account_id="acct_1")


async def _serve(exchange: Exchange, body: ChatCompletionRequest) -> tuple[Any, int]:
    """What http/serving.py does around the core, without HTTP: the answer and the status."""
    status = 500
    answer: Any = None
    try:
        try:
            run = await exchange.prepare(KEY, body, "gen_1")  # type: ignore[arg-type]
            if run is None:
                status = 499
            else:
                answer = await exchange.complete(run)
                status = 200 if answer is not None else 499
        except APIError as exc:
            status = exc.status
    finally:
        exchange.settle(status)
    return answer, status


@synchronous
async def test_admission_comes_before_media_and_the_hold_grows_after_it() -> None:
    steps = Steps()
    exchange, metrics = _exchange(steps)
    answer, status = await _serve(exchange, _body(image=True))
    assert status == 200
    assert answer["choices"][0]["message"]["content"] == "Hello there"
    # Routed (with media pending), admitted, then the media, routed again and held for again, settled.
    assert steps.names == ["route", "admit", "media", "route", "top_up", "finish", "metrics"]
    outcome, settled = steps.settled[0]
    assert settled == "success"
    assert outcome is not None and outcome.usage == Usage(prompt_tokens=10, completion_tokens=2)
    # $1/M input and $2/M output: 10 x 1000 + 2 x 2000 nano-dollars, priced by the core, not a format.
    assert outcome.cost_nano == 14_000
    assert answer["usage"]["cost"] == pytest.approx(0.000014)
    assert metrics.outcomes[0].status == 200 and metrics.outcomes[0].last is outcome


@synchronous
async def test_a_refused_admission_takes_no_media_and_settles_nothing() -> None:
    steps = Steps()
    exchange, metrics = _exchange(steps, refuse=True)
    _, status = await _serve(exchange, _body(image=True))
    assert status == 402
    assert "media" not in steps.names
    assert steps.names == ["route", "admit", "metrics"]  # no ticket: nothing held, nothing to settle
    assert metrics.outcomes[0].status == 402


@synchronous
async def test_a_provider_failure_settles_as_an_error_that_costs_nothing() -> None:
    steps = Steps()
    exchange, _ = _exchange(steps, fail_at=0)
    _, status = await _serve(exchange, _body())
    assert status == 502
    outcome, settled = steps.settled[0]
    assert settled == "error"
    assert outcome is not None and outcome.usage is None


@synchronous
async def test_a_client_leaving_during_media_cancels_the_request() -> None:
    steps = Steps()
    gone = asyncio.Event()
    exchange, _ = _exchange(steps, slow_media=True, gone=gone)
    serving = asyncio.ensure_future(_serve(exchange, _body(image=True)))
    await asyncio.sleep(0.1)
    gone.set()
    _, status = await asyncio.wait_for(serving, 5)  # not the media's 30 s
    assert status == 499
    assert steps.names == ["route", "admit", "media", "finish", "metrics"]
    assert steps.settled[0][1] == "cancelled"


@synchronous
async def test_a_client_leaving_mid_answer_stops_the_generation() -> None:
    steps = Steps()
    gone = asyncio.Event()
    exchange, _ = _exchange(steps, hang=True, gone=gone)
    serving = asyncio.ensure_future(_serve(exchange, _body()))
    await asyncio.sleep(0.7)  # past the disconnect watch's start
    gone.set()
    _, status = await asyncio.wait_for(serving, 5)
    assert status == 499
    assert "cancel" in steps.names
    assert steps.names.index("cancel") < steps.names.index("finish")
    assert steps.settled[0][1] == "cancelled"


class _Encoder:
    keepalive = b":\n\n"

    def __init__(self, outcome: GenerationOutcome) -> None:
        self.outcome = outcome
        self.costs: list[int | None] = []

    def opening(self) -> list[bytes]:
        return [b"open;"]

    def encode(self, batch: list[Event], out: list[bytes]) -> None:
        for event in batch:
            if isinstance(event, Delta):
                out.append((event.content or "").encode())
            elif isinstance(event, Done):
                self.costs.append(self.outcome.cost_nano)  # already priced when the batch arrives

    def failure(self, exc: APIError) -> bytes:
        return b"failed;"

    async def closing(self, failed: bool) -> bytes:
        return b";closed"


@synchronous
async def test_a_stream_is_priced_before_its_encoder_sees_the_usage() -> None:
    steps = Steps()
    exchange, _ = _exchange(steps)
    run = await exchange.prepare(KEY, _body(stream=True), "gen_1")  # type: ignore[arg-type]
    assert run is not None
    stream = await exchange.start_stream(run)
    encoder = _Encoder(run.outcome)
    sent = b"".join([piece async for piece in stream.frames(encoder, 1.0)])
    exchange.settle(200)
    assert sent == b"open;Hello there;closed"
    assert encoder.costs == [14_000]
    assert run.outcome.finish_reason == "stop" and run.outcome.ttft_ms is not None
    assert steps.settled[0][1] == "success"


@synchronous
async def test_a_stream_cut_by_the_client_is_charged_for_what_was_delivered() -> None:
    steps = Steps()
    exchange, _ = _exchange(steps, hang=True)
    run = await exchange.prepare(KEY, _body(stream=True), "gen_1")  # type: ignore[arg-type]
    assert run is not None
    stream = await exchange.start_stream(run)
    frames = stream.frames(_Encoder(run.outcome), 1.0)
    assert await anext(frames) == b"open;Hello"
    pending = asyncio.ensure_future(anext(frames))
    await asyncio.sleep(0.05)
    pending.cancel()  # the server cancels the frames when the client leaves
    with pytest.raises(asyncio.CancelledError):
        await pending
    await frames.aclose()
    exchange.settle(200)
    outcome, settled = steps.settled[0]
    assert settled == "cancelled"
    assert outcome is not None and outcome.usage is not None
    # The prompt as routing estimated it, the completion as delivered ("Hello": 5 bytes, 2 tokens).
    assert (outcome.usage.prompt_tokens, outcome.usage.completion_tokens) == (12, 2)
    assert outcome.cost_nano == 12 * 1000 + 2 * 2000
    assert "cancel" in steps.names


def test_the_generation_row_names_every_column() -> None:
    from kimi_gateway.storage.models import GenerationRecord
    from kimi_gateway.storage.rows import GenerationRow

    columns = {column.name for column in GenerationRecord.__table__.columns}
    assert set(GenerationRow.__annotations__) == columns
