"""What every provider adapter offers the router and the HTTP layer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from kimi_gateway.catalog import ModelCard
from kimi_gateway.providers.events import Event
from kimi_gateway.schema.chat import ChatCompletionRequest


class Generation(Protocol):
    """A started generation: its events, and a way to stop it early."""

    def events(self) -> AsyncIterator[Event]: ...

    def cancel(self) -> None: ...


class Provider(Protocol):
    name: str

    def model_ids(self) -> list[str]: ...

    def is_ready(self) -> bool: ...

    async def start(self, request: ChatCompletionRequest, card: ModelCard) -> Generation:
        """Check the request against this provider and start generating.

        Raises `APIError` for anything the client must hear about before a response begins.
        """
        ...
