"""What a wire format supplies to the serving object (http/serving.py), and what it is given."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.core.generation import StreamEncoder
from kimi_gateway.errors import APIError
from kimi_gateway.http.replies import error_response
from kimi_gateway.outcome import GenerationOutcome
from kimi_gateway.schema.chat import ChatCompletionRequest
from kimi_gateway.schema.completion import CompletionBody
from kimi_gateway.storage.responses import ResponseStore


@dataclass(frozen=True, slots=True)
class FormatContext:
    """What the formats use of the running gateway (the same for every request)."""

    max_body_bytes: int  # [server] max_body_bytes
    strict_rules: bool  # [routing] strict_rules: refuse what would be adapted
    responses: ResponseStore  # the Responses API's stored responses (previous_response_id, item_reference)
    searches: bool = False  # a web search backend is set up: tools that only may search are run, not dropped


class WireFormat(ABC):
    """One request's format: a new instance per request, so it may keep what it needs between `parse` and
    the response (the original request, for echoes and storage).

    The format parses and renders, nothing else: what a response costs, how it ended and which provider
    served it are in the outcome it is given, recorded by the core before any event reaches the format.
    """

    # What the translation changed rather than refuse (a tool left out, ...): the response's
    # `X-Gateway-Adapted` header names them.
    adaptations: tuple[str, ...] = ()

    @abstractmethod
    async def parse(
        self, request: Request, context: FormatContext, account: str | None
    ) -> ChatCompletionRequest:
        """The body, validated and translated; raises APIError for what the format refuses."""

    @abstractmethod
    def new_id(self) -> str:
        """The response's id, which is also its generation's id (`/api/v1/generation?id=`)."""

    @abstractmethod
    async def render(self, completion: CompletionBody, outcome: GenerationOutcome) -> Response:
        """The non-streamed response, from the whole completion in chat form."""

    @abstractmethod
    def encoder(self, outcome: GenerationOutcome) -> StreamEncoder:
        """The streamed response's encoder."""

    def error(self, exc: APIError) -> Response:
        """An error before the status line went out."""
        return error_response(exc)
