"""The legacy completions API (POST /v1/completions), as OpenAI, vLLM and OpenRouter serve it.

The request becomes a chat request whose `raw_prompt` is the prompt (its one user message is the same text,
for routing's estimates and the records): the embedded engine reads it without a template, upstream
adapters send it to the provider's own `/completions` (routing picks only endpoints that have one). What
no backend here returns is refused with a 400 that says so: `logprobs`, `suffix`, `best_of` above `n`,
token-id prompts and several prompts in one request.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from kimi_gateway.core.generation import ResponseEvent, priced_usage
from kimi_gateway.errors import APIError, invalid_request
from kimi_gateway.http.body import parse_body
from kimi_gateway.http.formats.base import FormatContext, WireFormat
from kimi_gateway.http.replies import ORJSONResponse
from kimi_gateway.http.sse import DONE_LINE, KEEPALIVE, sse_line
from kimi_gateway.http.validation import validation_error
from kimi_gateway.ids import new_id
from kimi_gateway.outcome import GenerationOutcome
from kimi_gateway.providers.events import Delta, Done, Finish
from kimi_gateway.schema.chat import ChatCompletionRequest
from kimi_gateway.schema.completion import CompletionBody
from kimi_gateway.schema.completions import CompletionRequest

PATH = "/v1/completions"
# What the chat request takes as it is (max_tokens always: the completions API's default is 16).
_PASSED = (
    "temperature",
    "top_p",
    "n",
    "stream",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "user",
    "provider",
    "models",
)


class TextFormat(WireFormat):
    __slots__ = ("echo", "include_usage", "prompt")

    async def parse(
        self, request: Request, context: FormatContext, account: str | None
    ) -> ChatCompletionRequest:
        body = await parse_body(request, CompletionRequest, context.max_body_bytes)
        prompt = _prompt(body.prompt)
        if body.logprobs is not None:
            raise invalid_request(
                "logprobs are not available: no backend of this gateway returns them", param="logprobs"
            )
        if body.suffix:
            raise invalid_request("suffix (insertion) is not supported by Kimi models", param="suffix")
        if body.best_of is not None and body.best_of != body.n:
            raise invalid_request("best_of other than n is not supported: ask for n samples", param="best_of")
        self.prompt, self.echo = prompt, body.echo
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        chat: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], "model": body.model}
        chat["max_tokens"] = body.max_tokens
        for name in _PASSED:
            if name in body.model_fields_set:
                chat[name] = getattr(body, name)
        try:
            converted = ChatCompletionRequest.model_validate(chat)
        except ValidationError as exc:
            raise validation_error(exc) from None
        converted.raw_prompt = prompt
        return converted

    def new_id(self) -> str:
        return new_id("cmpl-")

    async def render(self, completion: CompletionBody, meta: GenerationOutcome) -> Response:
        lead = self.prompt if self.echo else ""
        choices = [
            {
                "text": lead + (choice["message"]["content"] or ""),
                "index": choice["index"],
                "logprobs": None,
                "finish_reason": choice["finish_reason"],
            }
            for choice in completion["choices"]
        ]
        return ORJSONResponse({**_head(meta), "choices": choices, "usage": completion["usage"]})

    def encoder(self, meta: GenerationOutcome) -> TextStream:
        return TextStream(meta, self.prompt if self.echo else "", self.include_usage)


def _prompt(prompt: str | list[str] | list[int] | list[list[int]]) -> str:
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    if prompt and all(isinstance(p, str) for p in prompt):
        raise invalid_request(
            "send one prompt per request (a list of several is not supported)", param="prompt"
        )
    raise invalid_request("prompts as token ids are not supported: send the text", param="prompt")


def _head(meta: GenerationOutcome) -> dict[str, Any]:
    head: dict[str, Any] = {"id": meta.id, "object": "text_completion", "created": meta.created}
    head["model"] = meta.model
    if meta.provider:
        head["provider"] = meta.provider
    return head


class TextStream:
    """`text_completion` chunks: text deltas, the finish, usage (in the last finish chunk, and alone if
    asked for), then [DONE]."""

    keepalive = KEEPALIVE

    def __init__(self, meta: GenerationOutcome, echo: str, include_usage: bool) -> None:
        self.meta, self.echo, self.include_usage = meta, echo, include_usage
        self.finishes: list[Finish] = []

    def _chunk(self, index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        return {**_head(self.meta), "choices": [choice]}

    def opening(self) -> list[bytes]:
        return [sse_line(self._chunk(0, self.echo))] if self.echo else []

    def encode(self, batch: list[ResponseEvent], out: list[bytes]) -> None:
        for event in batch:
            if isinstance(event, Delta):
                if event.content:
                    out.append(sse_line(self._chunk(event.index, event.content)))
            elif isinstance(event, Finish):
                self.finishes.append(event)
            elif isinstance(event, Done):
                usage = priced_usage(event.usage, self.meta)
                for i, finish in enumerate(self.finishes):
                    chunk = self._chunk(finish.index, "", finish.reason)
                    if i == len(self.finishes) - 1:
                        chunk["usage"] = usage
                    out.append(sse_line(chunk))
                if self.include_usage:
                    out.append(sse_line({**_head(self.meta), "choices": [], "usage": usage}))

    def failure(self, exc: APIError) -> bytes:
        chunk = self._chunk(0, "", "error")
        return sse_line({**chunk, "error": {"code": exc.status, "message": exc.message}})

    async def closing(self, failed: bool) -> bytes:
        return DONE_LINE
