"""The legacy completions API (POST /v1/completions): a prompt continued as written, with no chat template.

Evaluation harnesses (lm-eval's `local-completions`, inspect) and older apps speak it; vLLM, SGLang and
OpenRouter serve it. Fields as OpenAI documents them, with its defaults (`max_tokens` 16).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kimi_gateway.schema.chat import MAX_OUTPUT_TOKENS, StreamOptions


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1, le=MAX_OUTPUT_TOKENS, strict=True)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128, strict=True)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=5)
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1, le=20, strict=True)
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # OpenRouter's routing extensions, as in every format.
    provider: dict[str, Any] | None = None
    models: list[str] | None = None
