"""The embedded engine as a provider: requests become prompt tokens, grammars and jobs for a LocalModel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from llama_cpp.llama_grammar import LlamaGrammar

from kimi_gateway.catalog import ModelCard
from kimi_gateway.engine import Job, LocalModel, SamplingParams, toolcalls
from kimi_gateway.engine.grammar import json_object_grammar, json_schema_grammar
from kimi_gateway.engine.worker import DONE, ERROR, FINISH, TEXT
from kimi_gateway.errors import (
    APIError,
    context_length_exceeded,
    invalid_request,
    provider_unavailable,
    unsupported_value,
)
from kimi_gateway.providers.base import Endpoint
from kimi_gateway.providers.events import Delta, Done, Event, Finish, ToolCallDelta, Usage
from kimi_gateway.schema.chat import (
    ChatCompletionRequest,
    NamedToolChoice,
    ResponseFormatJSONObject,
    ResponseFormatJSONSchema,
)

# Rendering and tokenizing a long prompt takes milliseconds; past this size it moves off the event loop.
_INLINE_PROMPT_CHARS = 8192


class LocalGeneration:
    def __init__(self, job: Job, tool_mode: str, n: int, model_id: str) -> None:
        self._job = job
        self._tool_mode = tool_mode
        self._n = n
        self._model_id = model_id

    def cancel(self) -> None:
        self._job.cancel()

    async def events(self) -> AsyncIterator[list[Event]]:
        inbox = self._job.inbox
        parsers = (
            [toolcalls.EnvelopeParser() for _ in range(self._n)]
            if self._tool_mode != toolcalls.MODE_NONE
            else None
        )
        completion_tokens = 0
        pending: tuple[Any, ...] | None = None
        while True:
            if pending is not None:
                message, pending = pending, None
            else:
                message = await inbox.get()
            kind = message[0]
            if kind == TEXT:
                _, index, text = message
                # When the loop falls behind the engine, send what has piled up as one chunk, not many.
                while not inbox.empty():
                    following = inbox.get_nowait()
                    if following[0] == TEXT and following[1] == index:
                        text += following[2]
                    else:
                        pending = following
                        break
                if parsers is not None:
                    text = parsers[index].feed(text)
                    if not text:
                        continue
                yield [Delta(index=index, content=text)]
            elif kind == FINISH:
                _, index, reason, produced, matched = message
                completion_tokens += produced
                native = reason
                batch: list[Event] = []
                if parsers is not None and (calls := parsers[index].tool_calls()) is not None:
                    batch.append(
                        Delta(
                            index=index,
                            tool_calls=[
                                ToolCallDelta(
                                    index=k,
                                    id=toolcalls.new_call_id(),
                                    name=call["name"],
                                    arguments=orjson.dumps(call.get("arguments", {})).decode(),
                                )
                                for k, call in enumerate(calls)
                            ],
                        )
                    )
                    reason = "tool_calls"
                batch.append(Finish(index=index, reason=reason, native_reason=native, stop_sequence=matched))
                yield batch
            elif kind == DONE:
                _, prompt_tokens, cached_tokens = message
                usage = Usage(
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cached_tokens=cached_tokens,
                )
                yield [Done(usage=usage, provider=LocalProvider.display_name, model=self._model_id)]
                return
            elif kind == ERROR:
                raise APIError(500, message[1], type="server_error", code="engine_error")


class LocalProvider:
    name = "local"
    display_name = "Local (llama.cpp)"

    def __init__(self, models: dict[str, LocalModel], cards: list[ModelCard]) -> None:
        self.models = models
        self._endpoints = [
            Endpoint(
                provider=self.name,
                provider_name=self.display_name,
                model=card.id,
                upstream_model=card.id,
                pricing=card.pricing,
                context_length=models[card.id].max_context,
                supported_parameters=frozenset(card.supported_parameters),
                input_modalities=frozenset(card.input_modalities),
                quantization=None,
            )
            for card in cards
        ]

    def endpoints(self) -> list[Endpoint]:
        return self._endpoints

    def is_ready(self) -> bool:
        return all(m.ready for m in self.models.values())

    async def start(
        self,
        request: ChatCompletionRequest,
        endpoint: Endpoint,
        card: ModelCard,
        drop: frozenset[str] = frozenset(),
    ) -> LocalGeneration:
        model = self.models[card.id]
        if not model.ready or model.template is None:
            raise provider_unavailable(f"The local model '{card.id}' is still loading.")
        if request.logprobs:
            raise unsupported_value("logprobs", "logprobs are not supported by the embedded engine.")

        mode = toolcalls.tool_mode(request.tools, request.tool_choice)
        grammar, tool_prompt = self._constraints(request, mode)
        tokens = await self.prompt_tokens(request, card, tool_prompt, mode)

        available = model.n_ctx - len(tokens)
        requested = request.requested_max_tokens
        if requested is not None and requested > available:
            raise context_length_exceeded(model.n_ctx, len(tokens), requested)
        if available <= 0:
            raise context_length_exceeded(model.n_ctx, len(tokens), 1)
        max_tokens = requested or min(card.defaults.max_tokens or available, available)

        defaults = card.defaults
        params = SamplingParams(
            temperature=_first(request.temperature, defaults.temperature, 1.0),
            top_p=_first(request.top_p, defaults.top_p, 1.0),
            top_k=request.top_k or 0,
            min_p=request.min_p or 0.0,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            repeat_penalty=request.repetition_penalty or 1.0,
            seed=request.seed,
        )
        job = Job(
            tokens=tokens,
            params=params,
            max_tokens=max_tokens,
            n=request.n,
            stop=request.stop_list,
            grammar=grammar,
            logit_bias=self._logit_bias(request, model),
            ignore_eos=request.ignore_eos,
        )
        model.submit(job)
        return LocalGeneration(job, mode, request.n, card.id)

    async def prompt_tokens(
        self,
        request: ChatCompletionRequest,
        card: ModelCard,
        tool_prompt: str | None = None,
        mode: str = toolcalls.MODE_NONE,
    ) -> list[int]:
        """The prompt exactly as the model will see it, tokenized by the model's own tokenizer."""
        model = self.models[card.id]
        template = model.template
        if template is None:
            raise provider_unavailable(f"The local model '{card.id}' is still loading.")
        messages = template.messages(request.messages, card.id, tool_prompt, mode)
        prefix = request.partial_prefix
        if prefix is not None:
            messages = messages[:-1]  # the prefix continues the assistant turn the template opens

        def encode() -> list[int]:
            return model.tokenize(template.render(messages) + (prefix or ""))

        size = sum(len(m["content"]) for m in messages)
        return encode() if size < _INLINE_PROMPT_CHARS else await asyncio.to_thread(encode)

    @staticmethod
    def _constraints(request: ChatCompletionRequest, mode: str) -> tuple[LlamaGrammar | None, str | None]:
        if mode != toolcalls.MODE_NONE:
            assert request.tools is not None
            choice = request.tool_choice
            tools = toolcalls.selected_tools(request.tools, choice)
            if isinstance(choice, NamedToolChoice) and not tools:
                raise invalid_request(
                    f"tool_choice names the function '{choice.function.name}', which is not in tools.",
                    param="tool_choice",
                )
            schema = toolcalls.envelope_schema(tools, mode, parallel=request.parallel_tool_calls is True)
            return json_schema_grammar(schema, param="tools"), toolcalls.system_prompt(tools, mode)
        fmt = request.response_format
        if isinstance(fmt, ResponseFormatJSONObject):
            return json_object_grammar(), None
        if isinstance(fmt, ResponseFormatJSONSchema):
            schema = fmt.json_schema.schema_ or {"type": "object"}
            return json_schema_grammar(schema, param="response_format.json_schema.schema"), None
        return None, None

    @staticmethod
    def _logit_bias(request: ChatCompletionRequest, model: LocalModel) -> dict[int, float] | None:
        if not request.logit_bias:
            return None
        vocab = model.vocab_size()
        bias: dict[int, float] = {}
        for key, value in request.logit_bias.items():
            if not key.isdigit() or int(key) >= vocab:
                raise invalid_request(
                    f"logit_bias keys must be token ids below {vocab}; got '{key}'.", param="logit_bias"
                )
            bias[int(key)] = value
        return bias


def _first(*values: float | None) -> float:
    for value in values:
        if value is not None:
            return value
    return 1.0
