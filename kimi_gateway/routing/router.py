"""Resolve a request's model to a catalog card and the provider that will serve it."""

from __future__ import annotations

from collections.abc import Iterable

from kimi_gateway.catalog import Catalog, ModelCard
from kimi_gateway.errors import provider_unavailable
from kimi_gateway.providers.base import Provider


class Router:
    def __init__(self, catalog: Catalog, providers: Iterable[Provider]) -> None:
        self.catalog = catalog
        self.providers = list(providers)
        self._by_model: dict[str, list[Provider]] = {}
        for provider in self.providers:
            for model_id in provider.model_ids():
                self._by_model.setdefault(model_id, []).append(provider)

    def providers_for(self, model_id: str) -> list[Provider]:
        return self._by_model.get(model_id, [])

    def resolve(self, model_id: str) -> tuple[ModelCard, Provider]:
        card = self.catalog.get(model_id)
        providers = self.providers_for(model_id)
        if not providers:
            raise provider_unavailable(
                f"The model '{model_id}' is in the catalog, but no provider serving it is configured. "
                f"Add a provider that lists '{model_id}' under its models in the gateway's config file "
                "(for example Moonshot's API, with its key in MOONSHOT_API_KEY), or pick an available model "
                "from GET /v1/models."
            )
        return card, providers[0]
