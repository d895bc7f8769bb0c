"""OpenRouter: reasoning as `reasoning`/`reasoning_details`, the `reasoning` request object."""

from __future__ import annotations

from typing import Any

from kimi_gateway.catalog import ModelCard
from kimi_gateway.providers.wire.base import WireStyle, history_reasoning
from kimi_gateway.schema.chat import ChatCompletionRequest


class OpenRouterStyle(WireStyle):
    name = "openrouter"
    fetches_image_urls = True  # the hosted OpenAI-compatible APIs fetch http(s) image URLs
    history_field = "reasoning"

    def replay_reasoning(self, message: dict[str, Any]) -> None:
        # reasoning_details must go back unmodified and in order (signatures, encrypted blocks).
        details = message.get("reasoning_details")
        text = history_reasoning(message)
        message.pop("reasoning_content", None)
        if text is not None:
            message["reasoning"] = text
        if details is not None:
            message["reasoning_details"] = details

    def map_reasoning(self, body: dict[str, Any], request: ChatCompletionRequest, card: ModelCard) -> None:
        reasoning: dict[str, Any] = {}
        if request.reasoning is not None:
            reasoning = request.reasoning.model_dump(exclude_unset=True)
        if request.reasoning_effort is not None and "effort" not in reasoning:
            reasoning["effort"] = request.reasoning_effort
        if request.include_reasoning is False:
            reasoning["exclude"] = True
        if request.reasoning_wanted is False and card.reasoning and not reasoning:
            reasoning["enabled"] = False  # thinking off (asked, or adapted here): OpenRouter's switch
        if reasoning:
            body["reasoning"] = reasoning
