"""Normalized provider events → OpenAI chat completion responses: an SSE stream, or one JSON body."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request

from kimi_gateway.errors import APIError
from kimi_gateway.http.middleware import RequestInfo
from kimi_gateway.providers.base import Generation
from kimi_gateway.providers.events import Delta, Done, Finish, ToolCallDelta, Usage
from kimi_gateway.schema.responses import (
    ChoiceBody,
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
    id: str
    created: int
    model: str
    started: float = field(default_factory=time.perf_counter)


def _sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _usage(usage: Usage) -> UsageBody:
    return usage_body(
        usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.reasoning_tokens
    )


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


def _record(info: RequestInfo, done: Done, meta: ResponseMeta) -> None:
    info.prompt_tokens = done.usage.prompt_tokens
    info.completion_tokens = done.usage.completion_tokens
    info.cached_tokens = done.usage.cached_tokens
    if done.provider:
        info.provider = done.provider


async def sse_stream(
    generation: Generation, meta: ResponseMeta, info: RequestInfo, include_usage: bool
) -> AsyncIterator[bytes]:
    """OpenAI's chunk sequence: role chunk, deltas, finish chunk, optional usage chunk, [DONE].

    If the client disconnects, Starlette cancels this generator; `finally` then stops the generation.
    """
    started = {0}
    finished = False
    yield _sse(
        chunk_body(
            meta.id,
            meta.created,
            meta.model,
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        )
    )
    try:
        async for event in generation.events():
            if isinstance(event, Delta):
                delta: dict[str, Any] = {}
                if event.index not in started:
                    started.add(event.index)
                    delta["role"] = "assistant"
                if event.content is not None:
                    delta["content"] = event.content
                if event.reasoning is not None:
                    delta["reasoning"] = event.reasoning
                if event.tool_calls:
                    delta["tool_calls"] = _tool_calls(event.tool_calls)
                if info.ttft_ms is None:
                    info.ttft_ms = round((time.perf_counter() - meta.started) * 1000, 2)
                choice = {"index": event.index, "delta": delta, "logprobs": None, "finish_reason": None}
                yield _sse(chunk_body(meta.id, meta.created, meta.model, [choice]))
            elif isinstance(event, Finish):
                info.finish_reason = event.reason
                choice = {
                    "index": event.index,
                    "delta": {},
                    "logprobs": None,
                    "finish_reason": event.reason,
                    "native_finish_reason": event.native_reason,
                }
                yield _sse(chunk_body(meta.id, meta.created, meta.model, [choice]))
            elif isinstance(event, Done):
                _record(info, event, meta)
                if include_usage:
                    body = chunk_body(meta.id, meta.created, meta.model, [])
                    body["usage"] = _usage(event.usage)
                    yield _sse(body)
        finished = True
    except APIError as exc:
        # The status line has gone out: the error travels as a final chunk, as OpenRouter does.
        finished = True
        info.finish_reason = "error"
        body = chunk_body(
            meta.id,
            meta.created,
            meta.model,
            [{"index": 0, "delta": {"content": ""}, "logprobs": None, "finish_reason": "error"}],
        )
        yield _sse({**body, "error": {"code": exc.status, "message": exc.message}})
    finally:
        generation.cancel()
        if not finished:
            info.client_closed = True
    yield DONE_LINE


@dataclass(slots=True)
class _Choice:
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, ToolCallBody] = field(default_factory=dict)
    finish: str | None = None
    native: str | None = None


async def collect(generation: Generation, meta: ResponseMeta, info: RequestInfo) -> CompletionBody:
    choices: dict[int, _Choice] = {}
    usage = Usage()
    async for event in generation.events():
        if isinstance(event, Delta):
            choice = choices.setdefault(event.index, _Choice())
            if event.content:
                choice.content.append(event.content)
            if event.reasoning:
                choice.reasoning.append(event.reasoning)
            for call in event.tool_calls or ():
                slot = choice.calls.setdefault(
                    call.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                )
                if call.id:
                    slot["id"] = call.id
                if call.name:
                    slot["function"]["name"] += call.name
                slot["function"]["arguments"] += call.arguments
        elif isinstance(event, Finish):
            choice = choices.setdefault(event.index, _Choice())
            choice.finish, choice.native = event.reason, event.native_reason
        elif isinstance(event, Done):
            usage = event.usage
            _record(info, event, meta)
    bodies: list[ChoiceBody] = []
    for index in sorted(choices):
        choice = choices[index]
        message: MessageBody = {
            "role": "assistant",
            "content": "".join(choice.content) if choice.content or not choice.calls else None,
            "refusal": None,
        }
        if choice.reasoning:
            message["reasoning"] = "".join(choice.reasoning)
        if choice.calls:
            message["tool_calls"] = [choice.calls[k] for k in sorted(choice.calls)]
        bodies.append(
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": choice.finish,
                "native_finish_reason": choice.native,
            }
        )
    info.finish_reason = bodies[0]["finish_reason"] if bodies else None
    return {
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": bodies,
        "usage": _usage(usage),
        "system_fingerprint": None,
    }


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def collect_unless_disconnected(
    request: Request, generation: Generation, meta: ResponseMeta, info: RequestInfo
) -> CompletionBody | None:
    """Collect the whole completion, stopping the generation if the client goes away first."""
    work = asyncio.ensure_future(collect(generation, meta, info))
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if work.done():
        return work.result()
    generation.cancel()
    work.cancel()
    info.client_closed = True
    return None
