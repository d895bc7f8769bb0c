"""Moonshot's official API (platform.moonshot.ai / kimi.ai)."""

from __future__ import annotations

from typing import Any

from kimi_gateway.catalog import ModelCard
from kimi_gateway.providers.wire.base import WireStyle
from kimi_gateway.schema.chat import ChatCompletionRequest


class MoonshotStyle(WireStyle):
    name = "moonshot"
    history_field = "reasoning_content"
    completions = False
    builtin_web_search = True  # `$web_search`: Moonshot searches, the client echoes the call back
    # Moonshot documents temperature in [0, 1], not OpenAI's [0, 2].
    temperature_range = (0.0, 1.0)

    def map_partial(self, body: dict[str, Any]) -> None:
        body["messages"][-1]["partial"] = True  # Moonshot's own flag

    def map_reasoning(self, body: dict[str, Any], request: ChatCompletionRequest, card: ModelCard) -> None:
        wanted = request.reasoning_wanted
        if wanted is not None and card.reasoning:
            body["thinking"] = {"type": "enabled" if wanted else "disabled"}
