"""The /v1/models shapes: OpenAI's fields plus OpenRouter's catalog fields."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from kimi_gateway.catalog import ModelCard

_MILLION = Decimal(1_000_000)


def per_token(usd_per_million: float) -> str:
    """OpenRouter's /models prices are USD per token, as decimal strings."""
    value = Decimal(str(usd_per_million)) / _MILLION
    return format(value.normalize(), "f") if value else "0"


def model_object(card: ModelCard, providers: list[str]) -> dict[str, Any]:
    modality = "+".join(card.input_modalities) + "->" + "+".join(card.output_modalities)
    return {
        "id": card.id,
        "object": "model",
        "created": card.created,
        "owned_by": "local" if card.local else "moonshotai",
        "name": card.name,
        "description": card.description,
        "context_length": card.context_length,
        "architecture": {
            "modality": modality,
            "input_modalities": card.input_modalities,
            "output_modalities": card.output_modalities,
            "tokenizer": "Other",
            "instruct_type": None,
        },
        "pricing": {
            "prompt": per_token(card.pricing.input),
            "completion": per_token(card.pricing.output),
            "input_cache_read": per_token(card.pricing.cached),
            "request": "0",
            "image": "0",
        },
        "top_provider": {"context_length": card.context_length, "max_completion_tokens": None},
        "supported_parameters": card.supported_parameters,
        "default_parameters": card.defaults.model_dump(exclude_none=True),
        "reasoning": card.reasoning,
        "max_images": card.max_images,
        "image_via_ocr": card.image_via_ocr,
        "available": bool(providers),
        "providers": providers,
    }
