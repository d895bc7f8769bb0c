"""Self-hosted vLLM and SGLang servers.

Thinking is switched with `chat_template_kwargs`. Without `--reasoning-parser`/`--tool-call-parser` the raw
markers arrive in `content`, so the output is parsed here (`server_parsers = false` in the provider config).
"""

from __future__ import annotations

from typing import Any

from kimi_gateway.catalog import ModelCard
from kimi_gateway.providers.wire.base import WireStyle
from kimi_gateway.schema.chat import ChatCompletionRequest


class VLLMStyle(WireStyle):
    name = "vllm"
    # vLLM renamed reasoning_content to reasoning; input accepts either.
    history_field = "reasoning"
    raw_output = True
    never = frozenset()  # vLLM knows ignore_eos

    def map_reasoning(self, body: dict[str, Any], request: ChatCompletionRequest, card: ModelCard) -> None:
        wanted = request.reasoning_wanted
        if wanted is not None and card.reasoning:
            kwargs = body.setdefault("chat_template_kwargs", {})
            kwargs["thinking"] = wanted

    def map_partial(self, body: dict[str, Any]) -> None:
        body["messages"][-1].pop("partial", None)
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False

    def starts_in_reasoning(self, request: ChatCompletionRequest, card: ModelCard) -> bool:
        # K2 Thinking's template opens <think> itself, so raw output may begin mid-reasoning.
        return not self.server_parsers and card.reasoning and request.reasoning_wanted is not False


class SGLangStyle(VLLMStyle):
    name = "sglang"
    history_field = "reasoning_content"

    def map_reasoning(self, body: dict[str, Any], request: ChatCompletionRequest, card: ModelCard) -> None:
        super().map_reasoning(body, request, card)
        if self.server_parsers:
            body["separate_reasoning"] = True
