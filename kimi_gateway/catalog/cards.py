"""Model cards: the packaged `models.toml` merged with the user's overrides."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, field
from importlib import resources
from typing import Any, Literal

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from kimi_gateway.errors import model_not_found

# Validated as they are built (pydantic's dataclasses), read as plain objects: the hot path reads a card's
# fields several times a request, and a BaseModel's attribute hook (its `__getattr__`) made each read cost
# three times a dataclass slot's.
_STRICT = ConfigDict(extra="forbid")


@dataclass(config=_STRICT, frozen=True, slots=True, kw_only=True)
class Pricing:
    """USD per million tokens."""

    input: float = 0.0
    cached_input: float | None = None
    output: float = 0.0

    @property
    def cached(self) -> float:
        return self.input if self.cached_input is None else self.cached_input


@dataclass(config=_STRICT, frozen=True, slots=True, kw_only=True)
class SamplingDefaults:
    """Used where a request sets nothing: the values the model's authors recommend."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None  # the embedded engine's (llama.cpp's repeat penalty)
    max_tokens: int | None = None


@dataclass(config=_STRICT, frozen=True, slots=True, kw_only=True)
class Rules:
    """Per-family request rules, enforced with Moonshot's messages (kimi_gateway/catalog/rules.py)."""

    # Fixed values: any other value is refused. Temperature may differ with thinking on and off.
    fixed_temperature_thinking: float | None = None
    fixed_temperature_instant: float | None = None
    fixed_top_p: float | None = None
    temperature_range: tuple[float, float] | None = None
    max_n: int | None = None
    # n > 1 needs a temperature above this (identical samples otherwise).
    min_temperature_for_n: float | None = None
    max_stop: int | None = None
    max_stop_bytes: int | None = None
    # Moonshot's API refuses tool names shorter than this (OpenAI's own rule: 1 to 64 characters).
    min_tool_name: int | None = None


@dataclass(config=_STRICT, frozen=True, slots=True, kw_only=True)
class LocalSpec:
    # A filesystem path, or `package:<package>/<file>` for a model shipped inside an installed package.
    gguf: str


@dataclass(config=_STRICT, frozen=True, slots=True, kw_only=True)
class ModelCard:
    id: str
    name: str
    created: int = 0
    description: str = ""
    context_length: int
    input_modalities: list[str] = field(default_factory=lambda: ["text"])
    output_modalities: list[str] = field(default_factory=lambda: ["text"])
    reasoning: bool = False
    # "always" (the model always thinks), "optional" (on by default, `thinking` switches it), or "never".
    thinking: Literal["always", "optional", "never"] = "never"
    max_images: int | None = None
    max_image_pixels: int | None = None
    # A text-only model that still takes images: each one is replaced by the text OCR reads from it.
    image_via_ocr: bool = False
    supported_parameters: list[str] = field(default_factory=list)
    pricing: Pricing = field(default_factory=Pricing)
    defaults: SamplingDefaults = field(default_factory=SamplingDefaults)
    rules: Rules = field(default_factory=Rules)
    local: LocalSpec | None = None

    def thinking_on(self, wanted: bool | None) -> bool:
        """Whether a request thinks, given what it asked for (None: the model's default)."""
        if self.thinking == "always":
            return True
        if self.thinking == "optional":
            return wanted is not False
        return False


def set_fields(card: object) -> dict[str, Any]:
    """A card's fields that are set (not None), as a dict."""
    return {k: v for k, v in asdict(card).items() if v is not None}  # type: ignore[call-overload]


class Catalog:
    def __init__(self, cards: dict[str, ModelCard]) -> None:
        self._cards = cards

    def get(self, model_id: str) -> ModelCard:
        card = self._cards.get(model_id)
        if card is None:
            raise model_not_found(model_id)
        return card

    def __iter__(self) -> Any:
        return iter(self._cards.values())

    def __len__(self) -> int:
        return len(self._cards)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_catalog(overrides: dict[str, dict[str, Any]] | None = None) -> Catalog:
    text = resources.files("kimi_gateway.catalog").joinpath("models.toml").read_text("utf-8")
    data = tomllib.loads(text)
    common: dict[str, Any] = data.get("common", {})
    entries: dict[str, dict[str, Any]] = {k: _merge(common, v) for k, v in data["models"].items()}
    for model_id, override in (overrides or {}).items():
        entries[model_id] = _merge(entries.get(model_id, common), override)
    cards = {model_id: ModelCard(**{**entry, "id": model_id}) for model_id, entry in entries.items()}
    return Catalog(cards)
