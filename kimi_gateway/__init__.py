"""kimi-gateway: a self-hosted, OpenAI-compatible API for the Kimi model family."""

__version__ = "0.1.0"
