"""The model catalog: what each model is, what it accepts, and what it costs."""

from kimi_gateway.catalog.cards import (
    Catalog,
    LocalSpec,
    ModelCard,
    Pricing,
    Rules,
    SamplingDefaults,
    load_catalog,
)

__all__ = ["Catalog", "LocalSpec", "ModelCard", "Pricing", "Rules", "SamplingDefaults", "load_catalog"]
