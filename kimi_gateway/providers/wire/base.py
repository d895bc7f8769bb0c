"""The OpenAI chat-completions request every style starts from."""

from __future__ import annotations

from typing import Any

from kimi_gateway.catalog import ModelCard
from kimi_gateway.providers.base import Endpoint
from kimi_gateway.schema.chat import ChatCompletionRequest, ContentPart, ImagePart, ImageURL, TextPart

# Fields only the gateway reads; a style re-adds, in its own form, what its provider understands.
GATEWAY_FIELDS = frozenset(
    {
        "provider",
        "models",
        "reasoning",
        "include_reasoning",
        "reasoning_effort",
        "stream",
        "stream_options",
    }
)
_HISTORY_REASONING = ("reasoning", "reasoning_content", "reasoning_details")
_CHAT_ONLY = (
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "thinking",
    "reasoning",
    "chat_template_kwargs",
    "session_id",
    "prompt_cache_key",
)


def history_reasoning(message: dict[str, Any]) -> str | None:
    """The reasoning text a client replayed on an assistant message, under whichever name it used."""
    for key in ("reasoning_content", "reasoning"):
        if isinstance(message.get(key), str):
            return str(message[key])
    details = message.get("reasoning_details")
    if isinstance(details, list):
        texts = [str(d["text"]) for d in details if isinstance(d, dict) and isinstance(d.get("text"), str)]
        if texts:
            return "".join(texts)
    return None


def _send_fetched_urls(parts: list[dict[str, Any]], originals: list[ContentPart] | list[TextPart]) -> None:
    """Each checked image that was fetched from a URL goes as that URL, not as its data."""
    for part, original in zip(parts, originals, strict=True):
        if isinstance(original, ImagePart) and isinstance(original.image_url, ImageURL):
            source = original.image_url.fetched_from
            if source is not None:
                part["image_url"]["url"] = source


class WireStyle:
    name = "openai"
    # The field this provider reads replayed reasoning from, on assistant messages.
    history_field: str | None = "reasoning_content"
    # Raw Kimi markers (<think>, tool-call section tokens) may appear in content and must be parsed.
    raw_output = False
    # Inclusive temperature range the provider accepts; values outside are clamped.
    temperature_range = (0.0, 2.0)
    # Parameters this provider family never accepts, whatever an endpoint's config says.
    never: frozenset[str] = frozenset({"ignore_eos"})
    # Whether the provider serves the legacy completions API (POST {base_url}/completions, a raw prompt):
    # vLLM, SGLang, OpenRouter and OpenAI-style hosts such as Together do; Moonshot documents none.
    completions = True

    # Whether the provider fetches image URLs itself; if so, images the gateway fetched (and checked) go as
    # their URL rather than as base64. A provider's config may say otherwise (`forward_image_urls`).
    fetches_image_urls = False

    def __init__(self, server_parsers: bool = True, forward_image_urls: bool | None = None) -> None:
        self.server_parsers = server_parsers
        if forward_image_urls is not None:
            self.fetches_image_urls = forward_image_urls

    def build_body(
        self, request: ChatCompletionRequest, endpoint: Endpoint, card: ModelCard, drop: frozenset[str]
    ) -> dict[str, Any]:
        # The serializer itself, and fields popped afterwards: pydantic's `exclude` costs more than the pops
        # (about a fifth of the dump), and `model_dump` only wraps this call.
        body: dict[str, Any] = request.__pydantic_serializer__.to_python(
            request, exclude_unset=True, by_alias=True
        )
        for name in GATEWAY_FIELDS:
            body.pop(name, None)
        for name in drop:
            body.pop(name, None)
        for name in self.never:
            body.pop(name, None)
        body["model"] = endpoint.upstream_model
        if "max_tokens" not in body and "max_completion_tokens" not in body and card.defaults.max_tokens:
            # Moonshot's default: 1024, and at least 16,000 for thinking models so reasoning cannot
            # starve the answer (the catalog holds the numbers).
            body["max_tokens"] = card.defaults.max_tokens
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        fetches = self.fetches_image_urls
        for message, original in zip(body["messages"], request.messages, strict=True):
            if message.get("role") == "assistant":
                self.replay_reasoning(message)
            elif fetches and isinstance(original.content, list):
                _send_fetched_urls(message["content"], original.content)
        temperature = body.get("temperature")
        if temperature is not None:
            low, high = self.temperature_range
            body["temperature"] = min(max(temperature, low), high)
        if "reasoning" not in drop:
            self.map_reasoning(body, request, card)
        if request.partial_prefix is not None:
            self.map_partial(body)
        if request.builtin_tools:
            # Moonshot's builtin functions (`$web_search`): given as the client sent them, for the
            # provider to run (routing sends them only to endpoints that do).
            body["tools"] = [*(body.get("tools") or ()), *request.builtin_tools]
        return body

    def build_completion_body(
        self, request: ChatCompletionRequest, endpoint: Endpoint, card: ModelCard, drop: frozenset[str]
    ) -> dict[str, Any]:
        """The legacy completions request: the chat body's sampling and limits, the raw prompt instead of
        messages, and nothing that belongs to chat (tools, response format, reasoning switches)."""
        body = self.build_body(request, endpoint, card, drop)
        for name in _CHAT_ONLY:
            body.pop(name, None)
        body["prompt"] = request.raw_prompt
        return body

    builtin_web_search = False  # the provider runs Moonshot's `$web_search` builtin itself

    def map_partial(self, body: dict[str, Any]) -> None:
        """Partial Mode. By default, as assistant prefill: a final assistant message the model continues."""
        body["messages"][-1].pop("partial", None)

    def replay_reasoning(self, message: dict[str, Any]) -> None:
        text = history_reasoning(message)
        for key in _HISTORY_REASONING:
            message.pop(key, None)
        if text is not None and self.history_field:
            message[self.history_field] = text

    def map_reasoning(self, body: dict[str, Any], request: ChatCompletionRequest, card: ModelCard) -> None:
        """Put the request's reasoning switch in this provider's own form; the default has none."""

    def starts_in_reasoning(self, request: ChatCompletionRequest, card: ModelCard) -> bool:
        """Whether raw output begins inside reasoning (the template opened `<think>` itself)."""
        return False
