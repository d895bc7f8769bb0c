"""The embedded engine as a provider: requests go to the model's engine process (engine/supervisor.py),
which builds the prompt, grammar and sampling settings and generates; its messages become normalized events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

import orjson

from kimi_gateway.catalog import ModelCard
from kimi_gateway.engine import toolcalls
from kimi_gateway.engine.protocol import Expired, Finished, JobDone, JobFailed, JobMessage, Text
from kimi_gateway.engine.supervisor import PROVIDER, EngineProcess, RemoteJob, engine_failed
from kimi_gateway.errors import APIError, overloaded, unsupported_value
from kimi_gateway.logs import request_id
from kimi_gateway.providers.base import Endpoint
from kimi_gateway.providers.events import Delta, Done, Event, Finish, ToolCallDelta, Usage
from kimi_gateway.schema.chat import ChatCompletionRequest


def job_request(request: ChatCompletionRequest) -> dict[str, Any]:
    """The request as the engine process reads it back: only what was set, under the wire's names."""
    data = request.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if request.raw_prompt is not None:
        data["raw_prompt"] = request.raw_prompt  # excluded from dumps: only the engine reads it
    return data


class LocalGeneration:
    def __init__(self, engine: EngineProcess, job: RemoteJob, tool_mode: str, n: int, model_id: str) -> None:
        self._engine = engine
        self._retry_after = engine.retry_after
        self._job = job
        self._tool_mode = tool_mode
        self._n = n
        self._model_id = model_id

    def cancel(self) -> None:
        self._engine.cancel(self._job)

    async def events(self) -> AsyncIterator[list[Event]]:
        """The job's messages as events. However this ends (its last message, the client leaving, a
        timeout, a shutdown closing the stream), the job ends on the engine: a cancel for a job that has
        already ended is not sent."""
        inbox = self._job.inbox
        parsers = (
            [toolcalls.EnvelopeParser() for _ in range(self._n)]
            if self._tool_mode != toolcalls.MODE_NONE
            else None
        )
        completion_tokens = 0
        pending: JobMessage | None = None
        try:
            while True:
                if pending is not None:
                    message, pending = pending, None
                else:
                    message = await inbox.get()
                if type(message) is Text:
                    index, text = message.index, message.text
                    # When the loop falls behind the engine, send what has piled up as one chunk, not many.
                    while not inbox.empty():
                        following = inbox.get_nowait()
                        if type(following) is Text and following.index == index:
                            text += following.text
                        else:
                            pending = following
                            break
                    if parsers is not None:
                        text = parsers[index].feed(text)
                        if not text:
                            continue
                    yield [Delta(index=index, content=text)]
                elif type(message) is Finished:
                    index, reason = message.index, message.reason
                    completion_tokens += message.produced
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
                    batch.append(
                        Finish(
                            index=index, reason=reason, native_reason=native, stop_sequence=message.matched
                        )
                    )
                    yield batch
                elif type(message) is JobDone:
                    usage = Usage(
                        prompt_tokens=message.prompt,
                        completion_tokens=completion_tokens,
                        cached_tokens=message.cached,
                    )
                    yield [Done(usage=usage, provider=PROVIDER, model=self._model_id)]
                    return
                elif type(message) is Expired:
                    raise overloaded(
                        f"The local model '{self._model_id}' is busy: {message.message}.", self._retry_after
                    )
                elif type(message) is JobFailed:
                    if message.crashed:  # the process died: as any provider failing, mid-stream or not
                        raise engine_failed(message.message)
                    raise APIError(500, message.message, type="server_error", code="engine_error")
        finally:
            self._engine.cancel(self._job)


class LocalProvider:
    name = "local"
    display_name = PROVIDER

    def __init__(self, engines: dict[str, EngineProcess], cards: list[ModelCard], preload: bool) -> None:
        self.engines = engines
        self._preload = preload
        self._endpoints = [
            Endpoint(
                provider=self.name,
                provider_name=self.display_name,
                model=card.id,
                upstream_model=card.id,
                pricing=card.pricing,
                context_length=engines[card.id].max_context,
                completions=True,
                supported_parameters=frozenset(card.supported_parameters),
                input_modalities=frozenset(card.input_modalities),
                quantization=None,
            )
            for card in cards
        ]

    def endpoints(self) -> list[Endpoint]:
        return self._endpoints

    def is_ready(self) -> bool:
        # The engines start on demand, so the provider is ready at once; preloaded, once they have started
        # (an engine stopped after idling later is still ready: the next request starts it).
        return not self._preload or all(e.starts > 0 for e in self.engines.values())

    async def start(
        self,
        request: ChatCompletionRequest,
        endpoint: Endpoint,
        card: ModelCard,
        drop: frozenset[str] = frozenset(),
    ) -> LocalGeneration:
        if request.logprobs:
            raise unsupported_value("logprobs", "logprobs are not supported by the embedded engine.")
        engine = self.engines[card.id]
        mode = toolcalls.tool_mode(request.tools, request.tool_choice)
        defaults = asdict(card.defaults)
        job = await engine.submit(job_request(request), defaults, request_id.get())
        return LocalGeneration(engine, job, mode, request.n, card.id)

    async def prompt_tokens(self, request: ChatCompletionRequest, card: ModelCard) -> int:
        """The prompt's size exactly as the model will see it, counted by the model's own tokenizer."""
        return await self.engines[card.id].count(job_request(request))
