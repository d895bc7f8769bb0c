"""One generation request, from its key to its settlement, with no HTTP in it.

HTTP (http/serving.py) authenticates, has the wire format parse the body, and writes what this returns;
the steps between run here, in the order the data flows: validate → route (a model nobody serves, or a
feature no endpoint has, is refused before any work) → admit (rate limits, then a credit hold, with media
estimated) → media intake (fetches, OCR, video, documents: the expensive part, only for admitted requests)
→ route again if intake changed the request (and grow the hold if it grew) → generate → settle, which the
owner calls in its `finally` however the request ended: finished, failed, cut by the client or cancelled.

What the request did is one `RequestOutcome` (outcome.py), filled in as it goes; settlement, the log line,
the metrics and the response all read it. A request holds one generation outcome per model call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from kimi_gateway.accounts.billing import Accountant, Ticket
from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.catalog import Catalog, ModelCard
from kimi_gateway.catalog.rules import apply_rules
from kimi_gateway.config import AgentsConfig
from kimi_gateway.core import credit
from kimi_gateway.core.disconnects import DisconnectWatch, Gone
from kimi_gateway.core.generation import GeneratedStream, GenerationRun, ResponseEvent
from kimi_gateway.core.replay import ReasoningMemory, TurnNote, served_call
from kimi_gateway.core.swarm import AgentNode, AgentRun, AgentRuns, Swarm, offer_create_agents, swarm_options
from kimi_gateway.core.toolloop import ToolLoop, offer_server_tools
from kimi_gateway.errors import APIError
from kimi_gateway.ids import new_id
from kimi_gateway.logs import event
from kimi_gateway.media import Media
from kimi_gateway.media.intake import has_media
from kimi_gateway.media.redact import redacted
from kimi_gateway.money import nano
from kimi_gateway.outcome import Failure, GenerationOutcome, RequestOutcome
from kimi_gateway.routing import Router
from kimi_gateway.routing.variants import apply_variant
from kimi_gateway.schema.chat import ChatCompletionRequest
from kimi_gateway.schema.checks import check_partial, check_tools
from kimi_gateway.schema.completion import CompletionBody
from kimi_gateway.schema.server_tools import ServerTool
from kimi_gateway.stats.metrics import Metrics
from kimi_gateway.tools.runner import Tools

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Parts:
    """What the request core uses of the running gateway, each by name: the composition root
    (runtime.py) builds it once."""

    catalog: Catalog
    router: Router
    accounts: Accountant
    media: Media
    reasoning: ReasoningMemory
    metrics: Metrics | None  # None: metrics are off
    strict_rules: bool  # [routing] strict_rules: refuse what Kimi's rules would adapt
    keepalive_seconds: float
    log_prompts: bool
    tools: Tools  # the server-side tools (web search, web fetch)
    agents: AgentsConfig  # swarm runs' bounds
    runs: AgentRuns  # swarm runs: live, kept, stored


class Exchange:
    """One generation request's core. The owner calls `prepare`, then `complete` (a whole answer) or
    `start_stream`, and always `settle`."""

    __slots__ = ("_gone", "_headers", "loop", "outcome", "parts", "run", "stream", "ticket")

    def __init__(
        self,
        parts: Parts,
        outcome: RequestOutcome,
        headers: Sequence[tuple[bytes, bytes]],
        gone: Gone,
    ) -> None:
        self.parts, self.outcome = parts, outcome
        self._headers = headers  # the app attribution headers are read from them at admission
        self._gone = gone
        self.ticket: Ticket | None = None  # once admitted: what it holds until settled
        self.run: GenerationRun | None = None  # once routed
        self.stream: GeneratedStream | None = None  # once a streamed generation has begun
        self.loop: ToolLoop | None = None  # a request whose model may call server-side tools

    async def prepare(
        self,
        key: KeyRecord | None,
        body: ChatCompletionRequest,
        generation_id: str,
        adaptations: Sequence[str] = (),
    ) -> GenerationRun | None:
        """Validate, route, admit, take the media in: the generation ready to run, or None if the client
        left during media intake. Raises the APIError that refuses the request. `adaptations`: what the
        wire format changed rather than refuse."""
        parts, outcome = self.parts, self.outcome
        account = key.account_id if key is not None else None
        apply_variant(body)
        outcome.requested_model, outcome.stream = body.model, body.stream
        check_tools(body)
        check_partial(body)
        if body.builtin_tools and not all(
            c.endpoint.builtin_web_search for c in parts.router.route(body, account).candidates
        ):
            # Moonshot's `$web_search`, for a model some other provider may serve: the gateway searches.
            body.builtin_tools = []
            body.server_tools = [*body.server_tools, ServerTool("web_search", "web_search")]
        if body.agent is not None:  # a swarm run: the model may create agents (core/swarm.py)
            if not parts.agents.enabled:
                raise APIError(
                    400, "Swarm runs are off on this gateway.", param="agent", code="unsupported_parameter"
                )
            offer_create_agents(body, parts.tools)
        looping = bool(body.server_tools)  # the model may call tools the gateway runs (core/toolloop.py)
        if looping:
            offer_server_tools(body, parts.tools)
        card = parts.catalog.get(body.model)
        strict = parts.strict_rules or (body.provider is not None and body.provider.require_parameters)
        memory = parts.reasoning
        adapted = apply_rules(body, card, strict, lambda call: memory.find(account, served_call(call)))
        outcome.adapted = [*adaptations, *adapted] if adaptations else adapted
        media = has_media(body)
        routed = parts.router.route(body, account, media_pending=media)
        generation = GenerationOutcome(id=generation_id, created=int(time.time()), model=body.model)
        generation.prompt_estimate = routed.prompt_tokens
        # A tool loop's model calls are its generations; the response (`generation`) is their sum.
        step = generation if not looping else GenerationOutcome(generation_id, generation.created, body.model)
        outcome.generations.append(step)
        # A tool-call turn's reasoning is kept, should a client drop it when it replays the turn.
        turn = TurnNote(memory, account) if body.tools and card.thinking != "never" and not looping else None
        run = self.run = GenerationRun(routed, generation, turn)
        if key is not None:
            self.ticket = await credit.admit(parts.accounts, key, body, routed, generation_id, self._headers)
        if media:
            if not await self._take_media(body, card, account):
                generation.client_closed = True
                return None
            # Images may be text now, videos frames: routed again, and held for again.
            routed = run.routed = parts.router.route(body, account)
            generation.prompt_estimate = routed.prompt_tokens
            if self.ticket is not None:
                await credit.top_up(parts.accounts, self.ticket, body, routed)
        if parts.log_prompts:
            event("prompt", request_id=outcome.request_id, messages=redacted(body.messages))
        if looping:
            step.prompt_estimate = run.routed.prompt_tokens
            budget = parts.media.pool.budget()
            swarm = None
            options = swarm_options(body, parts.agents) if body.agent is not None else None
            limit = nano(options.max_cost) if options is not None and options.max_cost is not None else None
            spending = credit.Spending(parts.accounts, self.ticket, limit)
            if options is not None:
                record = AgentRun(
                    new_id("run_"),
                    account,
                    generation_id,
                    body.model,
                    AgentNode("orchestrator", _task(body), role="orchestrator", status="running"),
                )
                record.orchestrator.started_at = record.created_at
                parts.runs.add(record)
                swarm = Swarm(
                    record,
                    options,
                    parts.agents,
                    body,
                    outcome,
                    router=parts.router,
                    tools=parts.tools,
                    spending=spending,
                    accounts=parts.accounts,
                    key=key,
                    budget=budget,
                )
                generation.agent_run = record.id
            loop = self.loop = ToolLoop(
                body,
                routed,
                step,
                outcome,
                router=parts.router,
                tools=parts.tools,
                spending=spending,
                account=account,
                budget=budget,
                max_steps=options.max_steps if options is not None else None,
                swarm=swarm,
                quiet_seconds=parts.keepalive_seconds,
            )
            run.routed = loop
            generation.tools = loop.tally
        return run

    async def _take_media(self, body: ChatCompletionRequest, card: ModelCard, account: str | None) -> bool:
        """The media intake, stopped if the client goes away meanwhile (a PDF or a video can take many
        seconds: nobody would read the answer). False if it did."""
        with DisconnectWatch(self._gone) as watch:
            try:
                await self.parts.media.prepare(body, card, account)
            except asyncio.CancelledError:
                if not watch.fired:
                    raise  # a shutdown
                watch.absorb()
                return False
        return True

    async def complete(self, run: GenerationRun) -> CompletionBody | None:
        """The whole answer in chat form, or None if the client went away first (the generation is then
        stopped)."""
        with DisconnectWatch(self._gone) as watch:
            try:
                return await run.collect()
            except asyncio.CancelledError:
                run.routed.cancel()  # whoever cancelled (the client leaving, a shutdown), it stops
                if not watch.fired:
                    raise  # cancelled for another reason (shutdown)
                watch.absorb()
                run.outcome.client_closed = True
                return None

    async def start_stream(self, run: GenerationRun) -> GeneratedStream:
        """The streamed generation started, and its first events awaited for up to the keep-alive
        interval: an early failure (every provider down) raises here, while a proper status can still
        be sent."""
        batches = run.routed.events()
        first: asyncio.Future[list[ResponseEvent]] = asyncio.ensure_future(anext(batches))
        stream = self.stream = GeneratedStream(run, batches, first)
        await asyncio.wait((first,), timeout=self.parts.keepalive_seconds)
        if first.done() and first.exception() is not None:
            await stream.stop()
            first.result()  # raises the APIError
        return stream

    def overhead(self) -> float:
        """The gateway's own time so far: everything but the wait on providers (TensorZero's and
        LiteLLM's measure)."""
        upstream = self.run.routed.upstream_seconds if self.run is not None else 0.0
        seconds = self.outcome.overhead_seconds = max(
            time.perf_counter() - self.outcome.started - upstream, 0.0
        )
        return seconds

    def _finish_run(self, loop: ToolLoop, record: AgentRun, settled: str) -> None:
        """A swarm run at the request's end: finished already if its orchestrator answered (the tree was
        complete before the response's last byte); else it failed or was cancelled here. Stored."""
        if record.status == "running" and loop.swarm is not None:
            loop.swarm.orchestrator_ended(loop, None)
            record.status = record.orchestrator.status = "failed" if settled == "error" else "cancelled"
        self.parts.runs.finish(record, record.status)

    def settle(self, status: int) -> None:
        """The request's end, however it came: charged, recorded and counted from its outcome.
        Synchronous, so a shutdown cancelling the request's task cannot interrupt it."""
        outcome = self.outcome
        outcome.status = status
        if self.run is not None and self.run.routed.attempts:
            outcome.failures = [Failure(a.provider, a.kind) for a in self.run.routed.attempts]
        if self.ticket is not None:
            if self.loop is not None and self.run is not None:
                settled = self.run.outcome.settled(status)
                # Every model call of the request: a tool loop's steps, a swarm's sub-agents' too; the
                # loop's last call ends as the request did.
                final = self.loop.steps[-1]
                self.parts.accounts.finish(self.ticket, final, settled, outcome.generations)
            else:
                last = outcome.last
                settled = last.settled(status) if last is not None else "error"
                self.parts.accounts.finish(self.ticket, last, settled)
        if self.loop is not None and self.loop.swarm is not None and self.run is not None:
            # After the charge: a run's tree is a report, and may not stand in the way of billing.
            try:
                self._finish_run(self.loop, self.loop.swarm.run_record, self.run.outcome.settled(status))
            except Exception:
                log.exception("finishing agent run %s failed", self.loop.swarm.run_record.id)
        if self.parts.metrics is not None:
            self.parts.metrics.request(outcome, time.perf_counter() - outcome.started)


def _task(body: ChatCompletionRequest) -> str:
    """The orchestrator's task as the run's tree shows it: the last user message's text, cut short."""
    for message in reversed(body.messages):
        if message.role == "user":
            content = message.content
            text = (
                content
                if isinstance(content, str)
                else " ".join(getattr(part, "text", "") or "" for part in content or ())
            )
            return text[:500]
    return ""
