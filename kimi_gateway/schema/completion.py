"""The chat completion in the gateway's own shape (OpenAI's, with OpenRouter's fields): the whole body, the
chunks and the usage object, which every wire format renders from.

Typed dicts built directly: no model instances are created on the hot path.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from kimi_gateway.ids import new_id


class PromptTokensDetails(TypedDict):
    cached_tokens: int


class CompletionTokensDetails(TypedDict):
    reasoning_tokens: int


class UsageBody(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int  # Moonshot's place for it
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails
    cost: NotRequired[float]
    server_tool_use: NotRequired[dict[str, int]]  # the server-side tools' calls (web search, fetch)


class FunctionBody(TypedDict):
    name: str
    arguments: str


class ToolCallBody(TypedDict):
    id: str
    type: str
    function: FunctionBody


class MessageBody(TypedDict):
    role: str
    content: str | None
    refusal: None
    tool_calls: NotRequired[list[ToolCallBody]]
    reasoning: NotRequired[str | None]
    reasoning_content: NotRequired[str | None]
    reasoning_details: NotRequired[list[dict[str, Any]]]
    annotations: NotRequired[list[dict[str, Any]]]  # url_citation, after server-side tools ran


class ChoiceBody(TypedDict):
    index: int
    message: MessageBody
    logprobs: None
    finish_reason: str | None
    native_finish_reason: NotRequired[str | None]


class CompletionBody(TypedDict):
    id: str
    object: str
    created: int
    model: str
    choices: list[ChoiceBody]
    usage: UsageBody
    system_fingerprint: None
    provider: NotRequired[str]
    agent_run_id: NotRequired[str]  # a swarm run's (GET /api/v1/agents/runs/{id})


class ChunkBody(TypedDict):
    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    system_fingerprint: None
    usage: NotRequired[UsageBody | None]
    provider: NotRequired[str]


def completion_id() -> str:
    return new_id("chatcmpl-")


def usage_body(prompt: int, completion: int, cached: int, reasoning: int) -> UsageBody:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": cached,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def chunk_body(
    id: str, created: int, model: str, choices: list[dict[str, Any]], provider: str | None = None
) -> ChunkBody:
    body: ChunkBody = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        "system_fingerprint": None,
    }
    if provider:
        body["provider"] = provider
    return body
