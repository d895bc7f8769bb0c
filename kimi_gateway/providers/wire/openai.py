"""Plain OpenAI-compatible hosts (Together, NVIDIA NIM)."""

from __future__ import annotations

from kimi_gateway.providers.wire.base import WireStyle


class OpenAIStyle(WireStyle):
    name = "openai"
    fetches_image_urls = True  # the hosted OpenAI-compatible APIs fetch http(s) image URLs
    history_field = "reasoning_content"
