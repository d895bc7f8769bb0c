"""Plain OpenAI-compatible hosts (Together, NVIDIA NIM)."""

from __future__ import annotations

from kimi_gateway.providers.wire.base import WireStyle


class OpenAIStyle(WireStyle):
    name = "openai"
    history_field = "reasoning_content"
