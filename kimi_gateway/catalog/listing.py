"""The catalog as the API lists it: /v1/models with OpenAI's fields plus OpenRouter's catalog fields, and
Anthropic's model objects."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from kimi_gateway.catalog.cards import ModelCard, set_fields

_MILLION = Decimal(1_000_000)


def usd_per_token(usd_per_million: float) -> str:
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
            "prompt": usd_per_token(card.pricing.input),
            "completion": usd_per_token(card.pricing.output),
            "input_cache_read": usd_per_token(card.pricing.cached),
            "request": "0",
            "image": "0",
        },
        "top_provider": {"context_length": card.context_length, "max_completion_tokens": None},
        "supported_parameters": card.supported_parameters,
        "default_parameters": set_fields(card.defaults),
        "reasoning": card.reasoning,
        "max_images": card.max_images,
        "image_via_ocr": card.image_via_ocr,
        "available": bool(providers),
        "providers": providers,
    }


def anthropic_model(card: ModelCard) -> dict[str, Any]:
    """Anthropic's ModelInfo, for clients that list models with the Anthropic SDK."""
    created = datetime.fromtimestamp(card.created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": "model",
        "id": card.id,
        "display_name": card.name,
        "created_at": created,
        "max_input_tokens": card.context_length,
    }


def anthropic_page(
    models: list[dict[str, Any]], after_id: str | None, before_id: str | None, limit: int
) -> dict[str, Any]:
    """Anthropic's cursor page over the list: `after_id` / `before_id`, `has_more`, `first_id`, `last_id`."""
    ids = [m["id"] for m in models]
    start, end = 0, len(models)
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else len(ids)
    if before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
        start = max(start, end - limit)
    page = models[start:end][:limit]
    has_more = (start + len(page) < end) if before_id is None else start > 0
    return {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }
