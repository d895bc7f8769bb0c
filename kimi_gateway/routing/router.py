"""The router: from a request to an ordered list of endpoints, tried with failover."""

from __future__ import annotations

import random
from collections.abc import Iterable

from kimi_gateway.catalog import Catalog
from kimi_gateway.config import RoutingConfig
from kimi_gateway.providers.base import Endpoint, Generation, Provider
from kimi_gateway.routing.attempts import RoutedGeneration, StickyState
from kimi_gateway.routing.features import estimate_prompt_tokens
from kimi_gateway.routing.health import ProviderHealth
from kimi_gateway.routing.plan import Candidate, Filtered, filter_endpoints, order_candidates
from kimi_gateway.routing.sticky import Stickiness
from kimi_gateway.schema.chat import ChatCompletionRequest, ProviderPreferences
from kimi_gateway.stats import EndpointStats

_NO_PREFERENCES = ProviderPreferences()


class Router:
    def __init__(
        self,
        catalog: Catalog,
        providers: Iterable[Provider],
        config: RoutingConfig | None = None,
        stats: EndpointStats | None = None,
        rng: random.Random | None = None,
    ) -> None:
        config = config or RoutingConfig()
        self.catalog = catalog
        self.config = config
        self.providers = {p.name: p for p in providers}
        self.stats = stats or EndpointStats()
        self.health = ProviderHealth(
            failures_to_open=config.breaker_failures,
            cooldown=config.breaker_cooldown_seconds,
            failure_window=config.failure_window_seconds,
            max_cooldown=config.max_cooldown_seconds,
        )
        self._rng = rng or random.Random()
        self.sticky = Stickiness(config.sticky_seconds)
        self._by_model: dict[str, list[Endpoint]] = {}
        for provider in self.providers.values():
            for endpoint in provider.endpoints():
                self._by_model.setdefault(endpoint.model, []).append(endpoint)

    def endpoints_for(self, model_id: str) -> list[Endpoint]:
        return self._by_model.get(model_id, [])

    def plan(
        self,
        request: ChatCompletionRequest,
        sticky_to: str | None = None,
        prompt: int | None = None,
        media_pending: bool = False,
    ) -> list[Candidate]:
        prefs = request.provider or _NO_PREFERENCES
        if prompt is None:
            prompt = estimate_prompt_tokens(request)
        models = [request.model, *(m for m in request.models or () if m != request.model)]
        candidates: list[Candidate] = []
        first_error = None
        for model_id in models:
            card = self.catalog.get(model_id)
            try:
                found = filter_endpoints(
                    request, card, self.endpoints_for(model_id), prefs, prompt, media_pending
                )
            except Filtered as why:
                first_error = first_error or why.error
                continue
            ordered = order_candidates(found, prefs, self.health, self.stats, self._rng)
            if sticky_to is not None and not prefs.order:
                # The provider holding this conversation's cached prefix goes first, if it is cheaper there.
                held = [c for c in ordered if c.endpoint.provider == sticky_to and c.endpoint.caches_cheaper]
                ordered = held + [c for c in ordered if c not in held]
            candidates.extend(ordered)
        if not candidates:
            assert first_error is not None
            raise first_error
        return candidates

    def route(
        self, request: ChatCompletionRequest, account: str | None = None, media_pending: bool = False
    ) -> RoutedGeneration:
        """The candidates for `request`, ready to try. `media_pending`: its media parts are not read yet
        (admission comes first), so images a model reads through OCR, and video a model takes as frames,
        do not rule endpoints out; the request is routed again once intake has rewritten it."""
        sticky = StickyState(request, account or "anonymous")
        if self.sticky:  # with nothing sticking, no conversation's hash can find anything
            sticky.provider = self.sticky.get(sticky.key)
        prompt = estimate_prompt_tokens(request)
        candidates = self.plan(request, sticky.provider, prompt, media_pending)
        routed = RoutedGeneration(self, request, candidates, buffered=not request.stream)
        routed.prompt_tokens = prompt
        routed.sticky = sticky
        return routed

    async def start(self, request: ChatCompletionRequest, candidate: Candidate) -> Generation:
        provider = self.providers[candidate.endpoint.provider]
        return await provider.start(request, candidate.endpoint, candidate.card, candidate.drop)
