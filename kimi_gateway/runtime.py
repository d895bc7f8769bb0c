"""The composition root: config in, a running set of catalog, engine models, providers and router out."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from redis.asyncio import Redis

from kimi_gateway.accounts.admission import Admission, RedisAdmission, SeparateAdmission
from kimi_gateway.accounts.billing import Accountant
from kimi_gateway.accounts.changes import ACCOUNT, KEY, Changes
from kimi_gateway.accounts.holds import Holds, MemoryHolds
from kimi_gateway.accounts.holds_redis import RedisHolds
from kimi_gateway.accounts.keys import KeyStore
from kimi_gateway.accounts.ledger import Ledger
from kimi_gateway.accounts.recorder import Recorder
from kimi_gateway.accounts.tiers import DEFAULT_TIERS, Tier, store_tiers
from kimi_gateway.catalog import Catalog, load_catalog
from kimi_gateway.config import GatewayConfig
from kimi_gateway.core.exchange import Parts
from kimi_gateway.core.replay import ReasoningMemory
from kimi_gateway.core.swarm import AgentRuns
from kimi_gateway.engine.locate import resolve_gguf
from kimi_gateway.engine.protocol import EngineSettings
from kimi_gateway.engine.supervisor import EngineProcess
from kimi_gateway.errors import APIError
from kimi_gateway.limits import MemoryLimiter
from kimi_gateway.media import Media
from kimi_gateway.media.files import FileStore
from kimi_gateway.media.intake import has_media
from kimi_gateway.media.ocr import OCR
from kimi_gateway.media.workers import MediaPool
from kimi_gateway.providers.base import Provider
from kimi_gateway.providers.client import UpstreamClient
from kimi_gateway.providers.local import LocalProvider
from kimi_gateway.providers.registry import build_upstream_providers
from kimi_gateway.routing import Router
from kimi_gateway.routing.features import TOKENS_PER_IMAGE, estimate_prompt_tokens
from kimi_gateway.schema.chat import ChatCompletionRequest, ContentPart, FilePart, TextPart, UserMessage
from kimi_gateway.stats.metrics import METRICS_DIR_ENV, Metrics
from kimi_gateway.stats.uptime import UptimeStore
from kimi_gateway.storage import Database, database_url
from kimi_gateway.storage.agent_runs import AgentRunStore
from kimi_gateway.storage.responses import ResponseStore
from kimi_gateway.storage.vector_stores import VectorStores
from kimi_gateway.tools.runner import Tools

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    config: GatewayConfig
    catalog: Catalog
    local_models: dict[str, EngineProcess]
    router: Router
    upstream: UpstreamClient  # the pooled client to providers (not the server: that is http/)
    db: Database
    keys: KeyStore
    accounts: Accountant
    media: Media
    files: FileStore
    responses: ResponseStore
    uptime: UptimeStore
    metrics: Metrics
    changes: Changes
    redis: Redis | None = None
    tools: Tools = field(kw_only=True)
    vector_stores: VectorStores = field(kw_only=True)
    reasoning: ReasoningMemory = field(default_factory=ReasoningMemory)
    runs: AgentRuns = field(kw_only=True)  # swarm runs (core/swarm.py)
    _metrics_task: asyncio.Task[None] | None = None
    core: Parts = field(init=False)  # what the request core uses, by name

    def __post_init__(self) -> None:
        config = self.config
        self.core = Parts(
            catalog=self.catalog,
            router=self.router,
            accounts=self.accounts,
            media=self.media,
            reasoning=self.reasoning,
            metrics=self.metrics if config.server.metrics else None,
            strict_rules=config.routing.strict_rules,
            keepalive_seconds=config.routing.keepalive_seconds,
            log_prompts=config.server.log_prompts,
            tools=self.tools,
            agents=config.agents,
            runs=self.runs,
        )

    async def start(self) -> None:
        await self.db.migrate()
        self.changes.listen(self._changed)
        await store_tiers(self.db, self.accounts.tiers)
        await self.accounts.recorder.start()
        await self.uptime.start()
        if self.metrics.folder is not None:
            self._metrics_task = asyncio.create_task(self.metrics.keep_written())
        if not await self.keys.any_keys():
            log.warning(
                "no API keys exist: serving WITHOUT authentication (loopback only). "
                "Create one with `kimi-gateway keys create --name NAME`."
            )
        await self.upstream.open()
        if self.config.engine.preload:
            for engine in self.local_models.values():
                # A failure is logged; /ready says so, and the next request tries again.
                with contextlib.suppress(APIError):
                    await engine.ensure()
        # What start-up built (modules, the catalog, the model's wrappers) lives as long as the process.
        # Frozen, the collector's full passes stop walking it again and again under load.
        gc.freeze()

    def _changed(self, kind: str | None, ident: str | None) -> None:
        if kind in (KEY, None):
            self.keys.forget(ident if kind else None)
        if kind in (ACCOUNT, None):
            self.accounts.forget(ident if kind else None)

    async def stop(self) -> None:
        await self.changes.close()
        await self.upstream.close()
        await self.tools.close()
        await self.runs.close()
        await self.media.close()
        await self.uptime.stop()
        if self._metrics_task is not None:
            self._metrics_task.cancel()
            self.metrics.write()
        await self.accounts.close()  # writes every waiting record before the database goes
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.close()
        for engine in self.local_models.values():
            await engine.stop()

    async def count_prompt_tokens(self, request: ChatCompletionRequest) -> tuple[int, str]:
        """The prompt's size, and how it was counted: the model's own tokenizer where the gateway has it
        (the embedded models), otherwise the documented estimate."""
        card = self.catalog.get(request.model)
        local = self.router.providers.get(LocalProvider.name)
        text, media = without_media(request)
        if isinstance(local, LocalProvider) and card.id in local.engines:
            counted = await local.prompt_tokens(text, card)
            # Images, video and files are not read to count them: each is estimated (see routing/features.py).
            return counted + media, "tokenizer" if not media else "tokenizer+media-estimate"
        return estimate_prompt_tokens(text) + media, "estimate"

    def is_ready(self) -> bool:
        return all(p.is_ready() for p in self.router.providers.values())


def without_media(request: ChatCompletionRequest) -> tuple[ChatCompletionRequest, int]:
    """The request with only its text parts, and an estimate of the tokens its media parts take: images and
    video at the per-image estimate routing uses, files at four characters a token of their size."""
    if not has_media(request):
        return request, 0
    text = request.model_copy(deep=True)
    media = 0
    for message in text.messages:
        if not isinstance(message, UserMessage) or not isinstance(message.content, list):
            continue
        kept: list[ContentPart] = []
        for part in message.content:
            if isinstance(part, TextPart):
                kept.append(part)
            elif isinstance(part, FilePart):
                data = part.file.file_data or ""
                media += len(data) * 3 // 4 // 4 if data else TOKENS_PER_IMAGE
            else:
                media += TOKENS_PER_IMAGE
        message.content = kept or ""
    return text, media


def build_gateway(config: GatewayConfig) -> Gateway:
    catalog = load_catalog(config.models)
    engine = config.engine
    local_models: dict[str, EngineProcess] = {}
    for card in catalog:
        if card.local is None:
            continue
        try:
            path = resolve_gguf(card.local.gguf)
        except FileNotFoundError as exc:
            log.error("local model unavailable", extra={"fields": {"model": card.id, "reason": str(exc)}})
            continue
        local_models[card.id] = EngineProcess(
            card.id,
            path,
            EngineSettings(
                max_context=min(engine.max_context, card.context_length),
                n_threads=engine.n_threads,
                n_threads_batch=engine.n_threads_batch,
                n_batch=engine.n_batch,
                flash_attn=engine.flash_attn,
                parallel=engine.parallel,
                kv_cells=engine.kv_cells,
                prefill_chunk=engine.prefill_chunk,
                queue_timeout=engine.queue_timeout_seconds,
                step_timeout=engine.step_timeout_seconds,
            ),
            max_queue=engine.max_queue,
            retry_after=engine.retry_after_seconds,
            idle_seconds=engine.idle_seconds,
            log_level=config.server.log_level,
        )
    # One pooled client for every upstream: connections are reused across requests and providers.
    upstream = UpstreamClient()
    providers: list[Provider] = []
    if local_models:
        providers.append(LocalProvider(local_models, [catalog.get(m) for m in local_models], engine.preload))
    providers.extend(build_upstream_providers(config.providers, catalog, upstream))
    router = Router(catalog, providers, config.routing)
    db = Database(database_url(config.database_url, config.data_dir))
    ledger = Ledger(db)
    redis = Redis.from_url(config.redis_url) if config.redis_url else None
    holds: Holds
    admission: Admission
    settings = config.accounts
    if redis is not None:
        holds = RedisHolds(redis, ledger, config.redis_prefix, settings.hold_seconds)
        admission = RedisAdmission(
            redis, ledger, config.redis_prefix, settings.hold_seconds, settings.slot_seconds
        )
    else:
        holds = MemoryHolds(ledger)
        admission = SeparateAdmission(MemoryLimiter(), holds)
    tiers = (
        [Tier(t.tier, t.min_recharge, t.concurrency, t.rpm) for t in settings.tiers]
        if settings.tiers
        else DEFAULT_TIERS
    )
    journal = config.data_dir.expanduser() / "journal"
    recorder = Recorder(ledger, holds, journal, settings.flush_seconds)
    # Under several workers (`serve --workers N` sets the folder), each writes its counters there.
    metrics_folder = os.environ.get(METRICS_DIR_ENV)
    metrics = Metrics(Path(metrics_folder) if metrics_folder else None)
    recorder.metrics = metrics
    pool = MediaPool(
        config.media.workers,
        config.media.jobs_per_account,
        config.media.document_budget_seconds,
        config.media.request_budget_seconds,
        config.media.decoding_megapixels,
    )
    files = FileStore(db, config.data_dir.expanduser() / "files", config.media, OCR(), pool)
    stores = VectorStores(db)
    media = Media(config.media, files)
    changes = Changes(redis, config.redis_prefix)
    cache = {"cache_seconds": settings.cache_seconds, "cache_grace_seconds": settings.cache_grace_seconds}
    return Gateway(
        config=config,
        catalog=catalog,
        local_models=local_models,
        router=router,
        upstream=upstream,
        db=db,
        keys=KeyStore(db, changes, **cache),
        accounts=Accountant(ledger, holds, admission, recorder, tiers, changes, **cache),
        media=media,
        tools=Tools(config.tools, config.media, pool, files.ocr, stores, files),
        runs=AgentRuns(config.agents.keep_runs, AgentRunStore(db)),
        vector_stores=stores,
        files=files,
        responses=ResponseStore(
            db, timedelta(days=config.responses.retention_days), config.media.max_total_bytes
        ),
        uptime=UptimeStore(db, router.stats, interval=max(settings.flush_seconds, 1.0)),
        metrics=metrics,
        changes=changes,
        redis=redis,
    )
