"""Normalized provider events → OpenAI chat completion responses: an SSE stream, or one JSON body."""

from __future__ import annotations

import asyncio
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.types import Receive

from kimi_gateway.accounts.pricing import cost_nano
from kimi_gateway.catalog import Pricing
from kimi_gateway.core.replay import TurnNote
from kimi_gateway.errors import APIError
from kimi_gateway.http.disconnects import DisconnectWatch
from kimi_gateway.ids import new_id
from kimi_gateway.money import usd
from kimi_gateway.providers.events import Delta, Done, Event, Finish, ToolCallDelta, Usage
from kimi_gateway.routing.attempts import RoutedGeneration
from kimi_gateway.schema.responses import (
    ChoiceBody,
    ChunkBody,
    CompletionBody,
    MessageBody,
    ToolCallBody,
    UsageBody,
    chunk_body,
    usage_body,
)

DONE_LINE = b"data: [DONE]\n\n"


@dataclass(slots=True)
class ResponseMeta:
    """One response's identity, and what its generation did: usage, cost and how it ended are recorded
    here from the generation's own events, for the response body and for settlement alike."""

    id: str
    created: int
    model: str  # the model that served: it changes after a models[] fallback
    provider: str | None = None
    pricing: Pricing | None = None  # the serving endpoint's, for usage.cost
    started: float = field(default_factory=time.perf_counter)
    usage: Usage | None = None  # from the generation's Done event
    cost_nano: int | None = None
    served_by: str | None = None  # the provider's display name, as the generation reported it
    finish_reason: str | None = None
    stop_sequence: str | None = None  # the stop string that ended the answer, where the provider says
    ttft_ms: float | None = None
    client_closed: bool = False
    turn: TurnNote | None = None  # a tool-call turn's reasoning, kept for clients that drop it
    _frame: tuple[tuple[str, str | None], bytes, bytes] | None = None

    def serve(self, routed: RoutedGeneration) -> None:
        if routed.served is not None:
            self.model = routed.served.card.id
            self.provider = routed.served.endpoint.provider_name
            self.pricing = routed.served.endpoint.pricing

    def chunk(self, choices: list[dict[str, Any]]) -> ChunkBody:
        return chunk_body(self.id, self.created, self.model, choices, self.provider)

    def chunk_event(self, choice: dict[str, Any]) -> bytes:
        """`sse_line(self.chunk([choice]))`, with what every chunk shares serialized once."""
        key = (self.model, self.provider)
        if self._frame is None or self._frame[0] != key:
            head, _, tail = sse_line(self.chunk([_MARK])).partition(_MARK_JSON)
            self._frame = (key, head, tail)
        _, head, tail = self._frame
        return head + orjson.dumps(choice) + tail


KEEPALIVE = b": PROCESSING\n\n"
_MARK: dict[str, Any] = {"\x00": 0}  # stands in for the one choice, to cut a serialized chunk around it
_MARK_JSON = orjson.dumps(_MARK)


def reasoning_details(text: str) -> list[dict[str, Any]]:
    return [{"type": "reasoning.text", "text": text, "format": "unknown", "index": 0}]


def sse_line(payload: Any) -> bytes:
    """One SSE `data:` event."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def priced_usage(usage: Usage, meta: ResponseMeta) -> UsageBody:
    """The usage object of a response, with its cost."""
    body = usage_body(
        usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens
    )
    if meta.cost_nano is not None:
        body["cost"] = usd(meta.cost_nano)
    return body


def _tool_calls(calls: list[ToolCallDelta]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for call in calls:
        item: dict[str, Any] = {"index": call.index, "function": {"arguments": call.arguments}}
        if call.id is not None:
            item["id"] = call.id
            item["type"] = "function"
        if call.name is not None:
            item["function"]["name"] = call.name
        out.append(item)
    return out


def record(done: Done, meta: ResponseMeta, routed: RoutedGeneration) -> None:
    """What the generation did, from its Done event: usage, the serving endpoint, and the cost."""
    usage = meta.usage = done.usage
    if done.provider:
        meta.served_by = done.provider
    meta.serve(routed)
    if meta.pricing is not None:
        meta.cost_nano = cost_nano(
            meta.pricing, usage.prompt_tokens, usage.cached_tokens, usage.completion_tokens
        )


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


def record_cut(meta: ResponseMeta, routed: RoutedGeneration, completion_tokens: int) -> None:
    """A stream that ended before its usage (the client left, a timeout, a failure after the first
    byte) is charged for what passed through: the prompt as routing estimated it, the completion as
    delivered."""
    if meta.usage is not None:
        return
    meta.serve(routed)
    record(
        Done(usage=Usage(prompt_tokens=routed.prompt_tokens, completion_tokens=completion_tokens)),
        meta,
        routed,
    )


class ChatStream:
    """OpenAI's chunk sequence: role chunk, deltas, finish chunk, optional usage chunk, [DONE]."""

    __slots__ = ("finishes", "include_usage", "meta", "routed", "started")

    keepalive = KEEPALIVE

    def __init__(self, meta: ResponseMeta, routed: RoutedGeneration, include_usage: bool) -> None:
        self.meta, self.routed, self.include_usage = meta, routed, include_usage
        self.started: set[int] = {0}
        self.finishes: list[Finish] = []

    def opening(self) -> list[bytes]:
        return [sse_line(self.meta.chunk([_role_choice(0)]))]

    def encode(self, batch: list[Event], out: list[bytes]) -> None:
        meta, started = self.meta, self.started
        for event in batch:
            if isinstance(event, Delta):
                out.append(meta.chunk_event(_delta_choice(event, started)))
            elif isinstance(event, Finish):
                # Held until usage is known: Moonshot's stream carries usage in the final choice.
                meta.finish_reason = event.reason
                self.finishes.append(event)
            elif isinstance(event, Done):
                out.extend(_closing_chunks(event, self.finishes, meta, self.routed, self.include_usage))

    def failure(self, exc: APIError) -> bytes:
        """A final chunk carrying the error, as OpenRouter sends it."""
        body = self.meta.chunk(
            [{"index": 0, "delta": {"content": ""}, "logprobs": None, "finish_reason": "error"}]
        )
        error: dict[str, Any] = {"code": exc.status, "message": exc.message}
        if exc.metadata:
            error["metadata"] = exc.metadata
        return sse_line({**body, "error": error})

    async def closing(self, failed: bool) -> bytes:
        return DONE_LINE


def _closing_chunks(
    done: Done,
    finishes: list[Finish],
    meta: ResponseMeta,
    routed: RoutedGeneration,
    include_usage: bool,
) -> list[bytes]:
    """The finish chunks, the last one carrying usage, and the usage-only chunk if the client asked."""
    record(done, meta, routed)
    usage = priced_usage(done.usage, meta)
    out = []
    for i, finish in enumerate(finishes):
        choice = {
            "index": finish.index,
            "delta": {},
            "logprobs": None,
            "finish_reason": finish.reason,
            "native_finish_reason": finish.native_reason,
        }
        if i == len(finishes) - 1:
            choice["usage"] = usage
        out.append(sse_line(meta.chunk([choice])))
    finishes.clear()
    if include_usage:
        body = meta.chunk([])
        body["usage"] = usage
        out.append(sse_line(body))
    return out


def _role_choice(index: int) -> dict[str, Any]:
    return {
        "index": index,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }


def _delta_choice(event: Delta, started: set[int]) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if event.index not in started:
        started.add(event.index)
        delta["role"] = "assistant"
    if event.content is not None:
        delta["content"] = event.content
    if event.reasoning is not None:
        # OpenRouter's names, and Moonshot's for clients written against it.
        delta["reasoning"] = event.reasoning
        delta["reasoning_content"] = event.reasoning
        delta["reasoning_details"] = reasoning_details(event.reasoning)
    if event.tool_calls:
        delta["tool_calls"] = _tool_calls(event.tool_calls)
    return {"index": event.index, "delta": delta, "logprobs": None, "finish_reason": None}


@dataclass(slots=True)
class _Choice:
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, ToolCallBody] = field(default_factory=dict)
    finish: str | None = None
    native: str | None = None


async def collect(routed: RoutedGeneration, meta: ResponseMeta) -> CompletionBody:
    choices: dict[int, _Choice] = {}
    usage = Usage()
    # Closed here however collecting ends (a disconnect, a shutdown), so the generation stops at once.
    async with aclosing(routed.events()) as events:
        async for batch in events:
            for event in batch:
                if isinstance(event, Delta):
                    # Not setdefault: it would build a throwaway _Choice for every delta.
                    choice = choices.get(event.index) or choices.setdefault(event.index, _Choice())
                    if event.content:
                        choice.content.append(event.content)
                    if event.reasoning:
                        choice.reasoning.append(event.reasoning)
                    for call in event.tool_calls or ():
                        slot = choice.calls.setdefault(
                            call.index,
                            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                        )
                        if call.id:
                            slot["id"] = call.id
                        if call.name:
                            slot["function"]["name"] += call.name
                        slot["function"]["arguments"] += call.arguments
                elif isinstance(event, Finish):
                    choice = choices.setdefault(event.index, _Choice())
                    choice.finish, choice.native = event.reason, event.native_reason
                    if event.index == 0:
                        meta.stop_sequence = event.stop_sequence
                elif isinstance(event, Done):
                    usage = event.usage
                    record(event, meta, routed)
    bodies: list[ChoiceBody] = []
    for index in sorted(choices):
        choice = choices[index]
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
            bodies_of_calls = message["tool_calls"] = [choice.calls[k] for k in sorted(choice.calls)]
            for body_of_call in bodies_of_calls:
                if not body_of_call["id"]:  # a provider sent none: clients match results to calls by id
                    body_of_call["id"] = new_id("call_")
        bodies.append(
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": choice.finish,
                "native_finish_reason": choice.native,
            }
        )
    meta.finish_reason = bodies[0]["finish_reason"] if bodies else None
    meta.serve(routed)
    body: CompletionBody = {
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": bodies,
        "usage": priced_usage(usage, meta),
        "system_fingerprint": None,
    }
    if meta.provider:
        body["provider"] = meta.provider
    return body


async def collect_unless_disconnected(
    receive: Receive, routed: RoutedGeneration, meta: ResponseMeta
) -> CompletionBody | None:
    """Collect the whole completion, stopping the generation if the client goes away first."""
    with DisconnectWatch(receive) as watch:
        try:
            return await collect(routed, meta)
        except asyncio.CancelledError:
            routed.cancel()  # whoever cancelled (the client leaving, a shutdown), the generation stops
            if not watch.fired:
                raise  # cancelled for another reason (shutdown)
            watch.absorb()
            meta.client_closed = True
            return None
