"""What every provider adapter offers the router and the HTTP layer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from kimi_gateway.catalog import ModelCard, Pricing
from kimi_gateway.providers.events import Event
from kimi_gateway.schema.chat import ChatCompletionRequest


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One model as served by one provider: what it costs and what it accepts there."""

    provider: str  # the provider's slug, as used in `provider.order`
    provider_name: str  # its display name
    model: str  # our model id
    upstream_model: str  # the provider's id for it
    pricing: Pricing
    context_length: int
    supported_parameters: frozenset[str]
    input_modalities: frozenset[str]
    quantization: str | None = None
    completions: bool = False  # serves the legacy completions API (a raw prompt, no chat template)
    builtin_web_search: bool = False  # runs Moonshot's `$web_search` builtin function itself

    @property
    def caches_cheaper(self) -> bool:
        return self.pricing.cached < self.pricing.input

    @property
    def price(self) -> float:
        """One number to rank by: input plus output, USD per million tokens."""
        return self.pricing.input + self.pricing.output


class Generation(Protocol):
    """A started generation: its events, and a way to stop it early.

    Events come in batches, never empty: those that arrived together (one network read, or the tokens
    an engine produced while the loop was busy) travel together, and cost one step of each layer above.
    """

    def events(self) -> AsyncIterator[list[Event]]: ...

    def cancel(self) -> None: ...


class Provider(Protocol):
    name: str
    display_name: str

    def endpoints(self) -> list[Endpoint]: ...

    def is_ready(self) -> bool: ...

    async def start(
        self, request: ChatCompletionRequest, endpoint: Endpoint, card: ModelCard, drop: frozenset[str]
    ) -> Generation:
        """Check the request against this endpoint and start generating.

        Raises `APIError` for anything the client must hear about before a response begins.
        """
        ...
