"""What a wire format supplies to the serving object (http/serving.py)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.errors import APIError
from kimi_gateway.http.completions import ResponseMeta
from kimi_gateway.http.responses import error_response
from kimi_gateway.http.streaming import StreamEncoder
from kimi_gateway.routing.attempts import RoutedGeneration
from kimi_gateway.runtime import Gateway
from kimi_gateway.schema.chat import ChatCompletionRequest
from kimi_gateway.schema.responses import CompletionBody


class WireFormat(ABC):
    """One request's format: a new instance per request, so it may keep what it needs between `parse` and
    the response (the original request, for echoes and storage)."""

    # What the translation changed rather than refuse (a tool left out, ...): the response's
    # `X-Gateway-Adapted` header names them.
    adaptations: tuple[str, ...] = ()

    @abstractmethod
    async def parse(self, request: Request, gateway: Gateway, account: str | None) -> ChatCompletionRequest:
        """The body, validated and translated; raises APIError for what the format refuses."""

    @abstractmethod
    def new_id(self) -> str:
        """The response's id, which is also its generation's id (`/api/v1/generation?id=`)."""

    @abstractmethod
    async def render(self, completion: CompletionBody, meta: ResponseMeta) -> Response:
        """The non-streamed response, from the whole completion in chat form."""

    @abstractmethod
    def encoder(self, meta: ResponseMeta, routed: RoutedGeneration) -> StreamEncoder:
        """The streamed response's encoder."""

    def error(self, exc: APIError) -> Response:
        """An error before the status line went out."""
        return error_response(exc)
