"""The composition root: config in, a running set of catalog, engine models, providers and router out."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from kimi_gateway.catalog import Catalog, load_catalog
from kimi_gateway.config import GatewayConfig
from kimi_gateway.engine import LocalModel
from kimi_gateway.engine.locate import resolve_gguf
from kimi_gateway.providers.base import Provider
from kimi_gateway.providers.client import UpstreamClient
from kimi_gateway.providers.local import LocalProvider
from kimi_gateway.providers.registry import build_upstream_providers
from kimi_gateway.routing import Router
from kimi_gateway.routing.features import estimate_prompt_tokens
from kimi_gateway.schema.chat import ChatCompletionRequest

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    config: GatewayConfig
    catalog: Catalog
    local_models: dict[str, LocalModel]
    router: Router
    http: UpstreamClient

    async def start(self) -> None:
        await self.http.open()
        for model in self.local_models.values():
            await asyncio.to_thread(model.load)
            log.info("local model loaded", extra={"fields": {"model": model.model_id, "n_ctx": model.n_ctx}})

    async def stop(self) -> None:
        await self.http.close()
        for model in self.local_models.values():
            await asyncio.to_thread(model.close)

    async def count_prompt_tokens(self, request: ChatCompletionRequest) -> tuple[int, str]:
        """The prompt's size, and how it was counted: the model's own tokenizer where the gateway has it
        (the embedded models), otherwise the documented estimate."""
        card = self.catalog.get(request.model)
        local = self.router.providers.get(LocalProvider.name)
        if isinstance(local, LocalProvider) and card.id in local.models:
            return len(await local.prompt_tokens(request, card)), "tokenizer"
        return estimate_prompt_tokens(request), "estimate"

    def is_ready(self) -> bool:
        return all(p.is_ready() for p in self.router.providers.values())


def build_gateway(config: GatewayConfig) -> Gateway:
    catalog = load_catalog(config.models)
    engine = config.engine
    local_models: dict[str, LocalModel] = {}
    for card in catalog:
        if card.local is None:
            continue
        try:
            path = resolve_gguf(card.local.gguf)
        except FileNotFoundError as exc:
            log.error("local model unavailable", extra={"fields": {"model": card.id, "reason": str(exc)}})
            continue
        local_models[card.id] = LocalModel(
            card.id,
            path,
            max_context=min(engine.max_context, card.context_length),
            n_threads=engine.n_threads,
            n_batch=engine.n_batch,
            max_queue=engine.max_queue,
            retry_after=engine.retry_after_seconds,
        )
    # One pooled client for every upstream: connections are reused across requests and providers.
    http = UpstreamClient()
    providers: list[Provider] = []
    if local_models:
        providers.append(LocalProvider(local_models, [catalog.get(m) for m in local_models]))
    providers.extend(build_upstream_providers(config.providers, catalog, http))
    router = Router(catalog, providers, config.routing)
    return Gateway(config=config, catalog=catalog, local_models=local_models, router=router, http=http)
