"""Wire styles: how each provider family wants a request, and its quirks. One module per style."""

from kimi_gateway.providers.wire.base import WireStyle
from kimi_gateway.providers.wire.moonshot import MoonshotStyle
from kimi_gateway.providers.wire.openai import OpenAIStyle
from kimi_gateway.providers.wire.openrouter import OpenRouterStyle
from kimi_gateway.providers.wire.selfhosted import SGLangStyle, VLLMStyle

STYLES: dict[str, type[WireStyle]] = {
    "moonshot": MoonshotStyle,
    "openrouter": OpenRouterStyle,
    "openai": OpenAIStyle,
    "vllm": VLLMStyle,
    "sglang": SGLangStyle,
}

__all__ = ["STYLES", "WireStyle"]
