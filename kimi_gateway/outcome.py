"""What a request did, as one typed record: filled in by the request core (core/) from the events as they
pass, and read by everything that reports it: the response body, settlement (accounts/), the log line and
the metrics (stats/). Below all of them, so that none has to copy it into a shape of its own.

A request holds one generation outcome per model call: one today; several once a request runs a tool loop
or a swarm of agents, each call settled as a generation of its own under the same request id.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from kimi_gateway.catalog import Pricing
from kimi_gateway.providers.events import Usage
from kimi_gateway.schema.server_tools import ToolTally

Settled = Literal["success", "error", "cancelled"]


@dataclass(slots=True)
class GenerationOutcome:
    """One model call: its identity (the response's id is the generation's id), and what it did."""

    id: str
    created: int  # epoch seconds, as response bodies give it
    model: str  # the model that served: it changes after a `models` fallback
    provider: str | None = None  # the serving endpoint's provider
    pricing: Pricing | None = None  # the serving endpoint's prices
    prompt_estimate: int = 0  # routing's estimate, until the provider's usage comes
    started: float = field(default_factory=time.perf_counter)
    usage: Usage | None = None  # the provider's, or for a cut stream what was delivered
    cost_nano: int | None = None  # at the serving endpoint's prices, once usage is known
    served_by: str | None = None  # the provider's display name, as the generation reported it
    finish_reason: str | None = None  # of the first choice
    stop_sequence: str | None = None  # the stop string that ended the answer, where the provider says
    ttft_ms: float | None = None
    client_closed: bool = False
    tool_calls: int = 0  # the server-side tool calls this model call made (run, or failed)
    tool_cost_nano: int = 0  # and their prices
    tools: ToolTally | None = None  # a tool loop's response: its calls, for usage and citations
    agent_run: str | None = None  # a swarm run's response: the run's id (GET /api/v1/agents/runs/{id})

    @property
    def provider_name(self) -> str | None:
        """Who served it, as reports name it."""
        return self.served_by or self.provider

    def settled(self, status_code: int) -> Settled:
        """How it ends for billing: a client that left cancelled it; an error status or an error
        mid-stream failed it."""
        if self.client_closed:
            return "cancelled"
        if status_code >= 400 or self.finish_reason == "error":
            return "error"
        return "success"


@dataclass(frozen=True, slots=True)
class Failure:
    """An endpoint that was tried and failed, by its provider and the kind of failure."""

    provider: str
    kind: str


@dataclass(slots=True)
class RequestOutcome:
    """One request, whatever its format: who asked, what was changed, each model call's outcome, how
    it ended."""

    request_id: str
    route: str  # the path as the app's routes see it
    started: float = field(default_factory=time.perf_counter)
    account_id: str | None = None
    requested_model: str | None = None  # as the client named it (a label only once routed)
    stream: bool | None = None
    generations: list[GenerationOutcome] = field(default_factory=list)
    failures: Sequence[Failure] = ()
    adapted: Sequence[str] = ()  # what was changed rather than refused (X-Gateway-Adapted)
    overhead_seconds: float | None = None  # the gateway's own time before the response started
    status: int = 500
    error_code: str | None = None
    error: str | None = None

    @property
    def last(self) -> GenerationOutcome | None:
        return self.generations[-1] if self.generations else None

    def usage(self) -> Usage:
        """Every model call's usage, summed."""
        total = Usage()
        for generation in self.generations:
            if generation.usage is not None:
                total.add(generation.usage)
        return total

    def cost_nano(self) -> int:
        return sum(g.cost_nano or 0 for g in self.generations)
