"""One model call inside a request: its events pass through here, where what they say is recorded in the
call's outcome (usage, cost, how it ended) before any wire format sees them. The formats then only turn
events into bytes: a whole completion in chat form (`collect`) or a stream's frames (`frames`).

However the call ends (finished, failed, cut by the client, stopped by the server), the generation behind
it is stopped and its outcome holds what it cost: a stream cut before its usage is charged for what
reached the client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

from kimi_gateway.accounts.pricing import cost_nano
from kimi_gateway.core.replay import TurnNote
from kimi_gateway.errors import APIError
from kimi_gateway.ids import new_id
from kimi_gateway.money import usd
from kimi_gateway.outcome import GenerationOutcome
from kimi_gateway.providers.events import Delta, Done, Event, Finish, ToolCallDelta, Usage
from kimi_gateway.routing.attempts import Attempt
from kimi_gateway.routing.plan import Candidate
from kimi_gateway.schema.completion import (
    ChoiceBody,
    CompletionBody,
    MessageBody,
    ToolCallBody,
    UsageBody,
    usage_body,
)
from kimi_gateway.schema.server_tools import (
    ApprovalRequest,
    McpListing,
    ToolResult,
    ToolUse,
    server_tool_usage,
    url_citations,
)

# What a response is made of: a provider's events, and a tool loop's server-side calls and results.
ResponseEvent = Event | ToolUse | ToolResult | McpListing | ApprovalRequest


class Generating(Protocol):
    """What a GenerationRun runs: a routed generation (routing/attempts.py), or a tool loop's steps
    (core/toolloop.py) presented as one."""

    prompt_tokens: int  # routing's estimate of the prompt

    @property
    def served(self) -> Candidate | None: ...

    @property
    def attempts(self) -> list[Attempt]: ...

    @property
    def upstream_seconds(self) -> float: ...

    def events(self) -> AsyncGenerator[list[Any], None]: ...

    def cancel(self) -> None: ...


class StreamEncoder(Protocol):
    """A wire format's half of a stream. `encode` appends the frames for one batch of events to `out`;
    each batch goes out as one write. The outcome is up to date when a batch reaches it (its usage and
    cost once the batch holds `Done`)."""

    keepalive: bytes  # sent while the first events are awaited (failover may be going on behind it)

    def opening(self) -> list[bytes]: ...

    def encode(self, batch: list[ResponseEvent], out: list[bytes]) -> None: ...

    def failure(self, exc: APIError) -> bytes: ...

    async def closing(self, failed: bool) -> bytes: ...


def reasoning_details(text: str) -> list[dict[str, Any]]:
    """OpenRouter's structured form of a reasoning text."""
    return [{"type": "reasoning.text", "text": text, "format": "unknown", "index": 0}]


def priced_usage(usage: Usage, outcome: GenerationOutcome) -> UsageBody:
    """The usage object of a response in chat form, with its cost."""
    body = usage_body(
        usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens
    )
    if outcome.cost_nano is not None:
        body["cost"] = usd(outcome.cost_nano)
    return body


def delivered_tokens(event: Delta) -> int:
    """An estimate of the tokens in one delta, for a stream cut before its usage came: UTF-8 bytes / 4
    (English runs about 4 characters a token; an emoji is 4 bytes and at least a token), and at least 1,
    since providers send about a token a delta."""
    size = 0
    if event.content:
        size += len(event.content.encode())
    if event.reasoning:
        size += len(event.reasoning.encode())
    for call in event.tool_calls or ():
        size += len(call.arguments) + len(call.name or "")
    return max(1, -(-size // 4))


@dataclass(slots=True)
class _Choice:
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, ToolCallBody] = field(default_factory=dict)
    finish: str | None = None
    native: str | None = None


class GenerationRun:
    """A routed generation and its outcome. `collect` or `frames` runs it, once."""

    __slots__ = ("delivered", "outcome", "routed", "turn")

    def __init__(self, routed: Generating, outcome: GenerationOutcome, turn: TurnNote | None) -> None:
        self.routed, self.outcome, self.turn = routed, outcome, turn
        self.delivered = 0  # tokens that reached the client, estimated: what a stream cut early costs

    def serve(self) -> None:
        """The serving endpoint, once one has started: the model that answers, its provider, its prices."""
        served = self.routed.served
        if served is not None:
            outcome = self.outcome
            outcome.model = served.card.id
            outcome.provider = served.endpoint.provider_name
            outcome.pricing = served.endpoint.pricing

    def finished(self, done: Done) -> None:
        """What the generation reported at its end: usage, the serving endpoint, and so the cost."""
        outcome = self.outcome
        usage = outcome.usage = done.usage
        if done.provider:
            outcome.served_by = done.provider
        self.serve()
        if done.cost_nano is not None:
            outcome.cost_nano = done.cost_nano
        elif outcome.pricing is not None:
            outcome.cost_nano = cost_nano(
                outcome.pricing, usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens
            )

    def cut(self) -> None:
        """A stream that ended before its usage (the client left, a timeout, a failure after the first
        byte) is charged for what passed through: the prompt as routing estimated it, the completion as
        delivered."""
        if self.outcome.usage is not None or self.routed.served is None:
            return
        usage = Usage(prompt_tokens=self.routed.prompt_tokens, completion_tokens=self.delivered)
        self.finished(Done(usage=usage))

    async def collect(self) -> CompletionBody:
        """The whole completion, in chat form."""
        choices: dict[int, _Choice] = {}
        usage = Usage()
        # Closed here however collecting ends (a disconnect, a shutdown), so the generation stops at once.
        async with aclosing(self.routed.events()) as events:
            async for batch in events:
                # The outcome recorded in the same pass (a stream's `observe`, without its ttft: no byte
                # reaches the client before the end).
                for event in batch:
                    if type(event) is Delta:
                        # Not setdefault: it would build a throwaway _Choice for every delta.
                        choice = choices.get(event.index) or choices.setdefault(event.index, _Choice())
                        if event.content:
                            choice.content.append(event.content)
                        if event.reasoning:
                            choice.reasoning.append(event.reasoning)
                        if event.tool_calls:
                            _add_calls(choice, event.tool_calls)
                    elif type(event) is Finish:
                        choice = choices.setdefault(event.index, _Choice())
                        choice.finish, choice.native = event.reason, event.native_reason
                        if event.index == 0:
                            self.outcome.stop_sequence = event.stop_sequence
                    elif type(event) is Done:
                        usage = event.usage
                        self.finished(event)
        self.serve()
        outcome = self.outcome
        bodies = [_choice_body(index, choices[index]) for index in sorted(choices)]
        outcome.finish_reason = bodies[0]["finish_reason"] if bodies else None
        if self.turn is not None and bodies:
            self.turn.keep_message(bodies[0]["message"])
        tools = outcome.tools
        if tools is not None and bodies:
            message = bodies[0]["message"]
            message["annotations"] = url_citations(message["content"] or "", tools.sources)
        body: CompletionBody = {
            "id": outcome.id,
            "object": "chat.completion",
            "created": outcome.created,
            "model": outcome.model,
            "choices": bodies,
            "usage": priced_usage(usage, outcome),
            "system_fingerprint": None,
        }
        if tools is not None:
            body["usage"]["server_tool_use"] = server_tool_usage(tools)
        if outcome.provider:
            body["provider"] = outcome.provider
        if outcome.agent_run is not None:
            body["agent_run_id"] = outcome.agent_run
        return body


def _add_calls(choice: _Choice, calls: list[ToolCallDelta]) -> None:
    for call in calls:
        slot = choice.calls.setdefault(
            call.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        )
        if call.id:
            slot["id"] = call.id
        if call.name:
            slot["function"]["name"] += call.name
        slot["function"]["arguments"] += call.arguments


def _choice_body(index: int, choice: _Choice) -> ChoiceBody:
    message: MessageBody = {
        "role": "assistant",
        "content": "".join(choice.content) if choice.content or not choice.calls else None,
        "refusal": None,
    }
    if choice.reasoning:
        text = "".join(choice.reasoning)
        message["reasoning"] = text
        message["reasoning_content"] = text
        message["reasoning_details"] = reasoning_details(text)
    if choice.calls:
        calls = message["tool_calls"] = [choice.calls[k] for k in sorted(choice.calls)]
        for call in calls:
            if not call["id"]:  # a provider sent none: clients match results to calls by id
                call["id"] = new_id("call_")
    return {
        "index": index,
        "message": message,
        "logprobs": None,
        "finish_reason": choice.finish,
        "native_finish_reason": choice.native,
    }


class GeneratedStream:
    """A streamed generation once started: `frames` relays it through a format's encoder; `stop` ends
    it, once, however the stream ends (from the frames' `finally`, or from the request's owner when the
    frames never ran: the client left or the server shut down before the response started)."""

    __slots__ = ("_batches", "_first", "_run", "stopped")

    def __init__(
        self,
        run: GenerationRun,
        batches: AsyncIterator[list[ResponseEvent]],
        first: asyncio.Future[list[ResponseEvent]],
    ) -> None:
        self._run, self._batches, self._first = run, batches, first
        self.stopped = False

    @property
    def started(self) -> bool:
        """The first events have come (or the first failure)."""
        return self._first.done()

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self._run.routed.cancel()
        first = self._first
        if not first.done():
            # The task waiting for the first events is still inside `batches`: it must have left before
            # the generator can be closed (closing a running generator raises, and the close is lost).
            first.cancel()
            await asyncio.wait((first,))
        await self._batches.aclose()  # type: ignore[attr-defined]

    async def frames(self, encoder: StreamEncoder, keepalive: float) -> AsyncIterator[bytes]:
        """The stream's bytes. If the client disconnects, the server cancels this generator; `finally`
        then stops the generation, which reaches the upstream as a closed connection."""
        run, first, batches = self._run, self._first, self._batches
        outcome = run.outcome
        finished = failed = False
        try:
            try:
                while not first.done():
                    await asyncio.wait((first,), timeout=keepalive)
                    if not first.done():
                        yield encoder.keepalive
                batch: list[ResponseEvent] | None = first.result()
                run.serve()
                out = encoder.opening()
                encode, turn, delivered = encoder.encode, run.turn, 0
                while batch is not None:
                    # What the batch says, recorded before the format renders it (inline: per batch).
                    for event in batch:
                        if type(event) is Delta:
                            if outcome.ttft_ms is None:
                                outcome.ttft_ms = round((time.perf_counter() - outcome.started) * 1000, 2)
                            delivered += delivered_tokens(event)
                            if turn is not None:
                                turn.add(event)
                        elif type(event) is Finish:
                            if event.index == 0:
                                outcome.finish_reason = event.reason
                                outcome.stop_sequence = event.stop_sequence
                        elif type(event) is Done:
                            run.finished(event)
                    run.delivered = delivered
                    encode(batch, out)
                    if out:
                        yield b"".join(out)
                        out = []
                    elif not batch:  # a tool loop's quiet while a tool runs: a keep-alive goes out
                        yield encoder.keepalive
                    batch = await anext(batches, None)
                finished = True
                if turn is not None:
                    turn.keep()
            except APIError as exc:
                # The status line has gone out: the error travels in the stream, in the format's own way.
                finished = failed = True
                outcome.finish_reason = "error"
                run.serve()
                yield encoder.failure(exc)
        finally:
            await self.stop()
            if not finished:
                outcome.client_closed = True
            run.cut()  # nothing when the usage came
        tail = await encoder.closing(failed)
        if tail:
            yield tail
