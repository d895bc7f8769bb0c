"""OpenAI chat completions: the gateway's own shape, so nothing is translated."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.errors import APIError
from kimi_gateway.http.body import parse_body
from kimi_gateway.http.completions import ChatStream, ResponseMeta
from kimi_gateway.http.formats.base import WireFormat
from kimi_gateway.http.responses import FastJSONResponse
from kimi_gateway.routing.attempts import RoutedGeneration
from kimi_gateway.runtime import Gateway
from kimi_gateway.schema.chat import ChatCompletionRequest
from kimi_gateway.schema.responses import CompletionBody, completion_id


class ChatFormat(WireFormat):
    __slots__ = ("include_usage",)

    def __init__(self) -> None:
        self.include_usage = False

    async def parse(self, request: Request, gateway: Gateway, account: str | None) -> ChatCompletionRequest:
        body = await parse_body(request, ChatCompletionRequest, gateway.config.server.max_body_bytes)
        if body.raw_prompt is not None:
            raise APIError(
                400, "Unrecognized request argument supplied: raw_prompt", code="unknown_parameter"
            )
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return body

    def new_id(self) -> str:
        return completion_id()

    async def render(self, completion: CompletionBody, meta: ResponseMeta) -> Response:
        return FastJSONResponse(completion)

    def encoder(self, meta: ResponseMeta, routed: RoutedGeneration) -> ChatStream:
        return ChatStream(meta, routed, self.include_usage)
