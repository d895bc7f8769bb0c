"""One generation request, owned by one object from the request's first byte to its settlement.

The same object serves every wire format (chat completions, Anthropic Messages, Responses): the format
(http/formats/) only parses the body into the gateway's request and renders the response.

The steps run in the order the data flows: authenticate → validate → route (a model nobody serves, or a
feature no endpoint has, is refused before any work) → admit (rate limits, then a credit hold, with media
estimated) → media intake (fetches, OCR, video, documents: the expensive part, only for admitted requests)
→ route again if intake changed the request (and grow the hold if it grew) → generate → respond → settle,
in `serve`'s `finally`, however the request ended: finished, failed, cut by the client or cancelled.

The request's state is this object's fields, not keys in `scope["state"]`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from kimi_gateway.accounts.billing import Ticket
from kimi_gateway.accounts.keys import KeyRecord
from kimi_gateway.catalog import ModelCard
from kimi_gateway.catalog.rules import apply_rules
from kimi_gateway.core.replay import TurnNote, served_call
from kimi_gateway.errors import APIError, shutting_down
from kimi_gateway.http import accounting
from kimi_gateway.http.auth import authenticate
from kimi_gateway.http.completions import ResponseMeta, collect_unless_disconnected
from kimi_gateway.http.disconnects import DisconnectWatch
from kimi_gateway.http.errors import internal_api_error
from kimi_gateway.http.formats import WireFormat
from kimi_gateway.http.middleware import NOSNIFF, begin, log_request, request_id_header, route_path
from kimi_gateway.http.responses import FastSSEResponse
from kimi_gateway.http.streaming import GenerationStop, sse_stream
from kimi_gateway.logs import event, logger
from kimi_gateway.media.intake import has_media
from kimi_gateway.media.redact import redacted
from kimi_gateway.providers.events import Event
from kimi_gateway.routing.attempts import RoutedGeneration
from kimi_gateway.routing.variants import apply_variant
from kimi_gateway.runtime import Gateway
from kimi_gateway.schema.chat import ChatCompletionRequest
from kimi_gateway.schema.checks import check_partial, check_tools

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Completion:
    """A generation request (POST /v1/chat/completions, /v1/messages, /v1/responses), one instance per
    request."""

    __slots__ = (
        "adapted",
        "format",
        "gateway",
        "info",
        "key",
        "meta",
        "overhead",
        "receive",
        "routed",
        "scope",
        "send",
        "started",
        "stop",
        "ticket",
    )

    def __init__(self, gateway: Gateway, fmt: WireFormat, scope: Scope, receive: Receive, send: Send) -> None:
        self.gateway = gateway
        self.format = fmt
        self.scope, self.receive, self.send = scope, receive, send
        self.started = time.perf_counter()
        self.info = begin(scope)  # the request id, and the one log line's record
        self.key: KeyRecord | None = None
        self.ticket: Ticket | None = None  # once admitted: what it holds until settled
        self.meta: ResponseMeta | None = None  # once routed: the response, and what the generation did
        self.routed: RoutedGeneration | None = None
        self.overhead: float | None = None  # seconds of our own before the response started
        self.stop: GenerationStop | None = None  # a streamed generation's stop, once it has begun
        self.adapted: Sequence[str] = ()  # what was changed rather than refused (X-Gateway-Adapted)

    async def serve(self) -> None:
        response: Response | None = None
        try:
            try:
                response = await self._respond()
            except APIError as exc:
                response = self.format.error(exc)
                self.info.notes = {"error_code": exc.code or exc.type, "error": exc.message[:500]}
            except asyncio.CancelledError:
                # A client leaving is absorbed where it is watched: this is the server stopping a request
                # past its graceful shutdown. The client hears so, in its format, and may retry elsewhere.
                task = asyncio.current_task()
                assert task is not None
                task.uncancel()
                if self.stop is not None:
                    await self.stop()
                response = self.format.error(shutting_down())
            except Exception as exc:
                response = self.format.error(internal_api_error(self.scope["path"], exc))
            response.raw_headers += (request_id_header(self.info), NOSNIFF)
            await response(self.scope, self.receive, self.send)
        finally:
            if self.stop is not None:
                await self.stop()  # a no-op when the stream ran: it stopped its generation itself
            status = response.status_code if response is not None else 500
            if self.ticket is not None:
                # Synchronous, so a shutdown cancelling this task cannot interrupt it.
                accounting.finish(self.gateway, self.ticket, self.meta, status)
            if logger.isEnabledFor(logging.INFO):
                self._log(status)
            if self.gateway.config.server.metrics:
                self._measure(status)

    def _measure(self, status: int) -> None:
        meta, routed = self.meta, self.routed
        usage = meta.usage if meta is not None else None
        self.gateway.metrics.request(
            route_path(self.scope),
            # Only a routed request names a model: the catalog's ids. A refused one's `model` is whatever
            # the client sent, and as a label it would grow the figures without bound.
            meta.model if meta is not None else "",
            (meta.served_by or meta.provider or "") if meta is not None else "",
            status,
            time.perf_counter() - self.started,
            meta.ttft_ms / 1000 if meta is not None and meta.ttft_ms is not None else None,
            self.overhead,
            (usage.prompt_tokens, usage.cached_tokens, usage.reasoning_tokens, usage.completion_tokens)
            if usage is not None
            else (0, 0, 0, 0),
            (meta.cost_nano or 0) / 1e9 if meta is not None else 0.0,
            [(a.provider, a.kind) for a in routed.attempts] if routed is not None else [],
        )

    def _overhead_header(self, routed: RoutedGeneration) -> tuple[bytes, bytes]:
        """The gateway's own time so far: everything but the wait on providers (TensorZero's and LiteLLM's
        measure), also given to the client as `X-Gateway-Overhead-Ms`."""
        overhead = self.overhead = max(time.perf_counter() - self.started - routed.upstream_seconds, 0.0)
        return (b"x-gateway-overhead-ms", b"%.3f" % (overhead * 1000))

    def _log(self, status: int) -> None:
        info, meta = self.info, self.meta
        if self.adapted:
            info.notes = {**(info.notes or {}), "adapted": ", ".join(self.adapted)}
        if meta is not None:
            info.model = meta.model
            info.provider = meta.served_by or meta.provider
            info.finish_reason = meta.finish_reason
            info.ttft_ms = meta.ttft_ms
            info.cost_nano = meta.cost_nano
            info.client_closed = meta.client_closed
            if meta.usage is not None:
                info.prompt_tokens = meta.usage.prompt_tokens
                info.completion_tokens = meta.usage.completion_tokens
                info.cached_tokens = meta.usage.cached_tokens
                info.reasoning_tokens = meta.usage.reasoning_tokens
        log_request(self.scope, info, status, self.started)

    async def _respond(self) -> Response:
        gateway = self.gateway
        key = self.key = await authenticate(gateway, self.scope)
        account = key.account_id if key is not None else None
        self.info.account_id = account
        request = Request(self.scope, self.receive, self.send)
        body = await self.format.parse(request, gateway, account)
        apply_variant(body)
        self.info.model, self.info.stream = body.model, body.stream
        check_tools(body)
        check_partial(body)
        card = gateway.catalog.get(body.model)
        strict = gateway.strict_rules or (body.provider is not None and body.provider.require_parameters)
        memory = gateway.reasoning
        adapted = apply_rules(body, card, strict, lambda call: memory.find(account, served_call(call)))
        formats = self.format.adaptations
        self.adapted = [*formats, *adapted] if formats else adapted
        media = has_media(body)
        routed = self.routed = gateway.router.route(body, account, media_pending=media)
        meta = self.meta = ResponseMeta(id=self.format.new_id(), created=int(time.time()), model=body.model)
        if body.tools and card.thinking != "never":
            meta.turn = TurnNote(memory, account)  # its reasoning is kept, should a client drop it
        if key is not None:
            self.ticket = await accounting.admit(gateway, key, body, routed, meta.id, self.scope["headers"])
        if media:
            if not await self._prepare_media(body, card):
                return Response(status_code=499)
            routed = self.routed = gateway.router.route(
                body, account
            )  # images may be text now, videos frames
            if self.ticket is not None:
                await accounting.top_up(gateway, self.ticket, body, routed)
        if gateway.config.server.log_prompts:
            event("prompt", request_id=self.info.request_id, messages=redacted(body.messages))

        if not body.stream:
            completion = await collect_unless_disconnected(self.receive, routed, meta)
            if completion is None:
                return Response(status_code=499)
            if meta.turn is not None:
                meta.turn.keep_message(completion)
            response = await self.format.render(completion, meta)
            response.raw_headers.append(self._overhead_header(routed))
            self._adapted(response)
            return response

        # Wait briefly for the first events: an early failure still gets a proper status and JSON error.
        batches = routed.events()
        first: asyncio.Future[list[Event]] = asyncio.ensure_future(anext(batches))
        stop = self.stop = GenerationStop(routed, batches, first)
        keepalive = gateway.config.routing.keepalive_seconds
        await asyncio.wait((first,), timeout=keepalive)
        if first.done() and first.exception() is not None:
            await stop()
            first.result()  # raises the APIError
        encoder = self.format.encoder(meta, routed)
        stream = sse_stream(stop, routed, batches, first, meta, encoder, keepalive)
        response = FastSSEResponse(stream, _SSE_HEADERS, lambda: encoder.failure(shutting_down()))
        if first.done():  # else the wait on the provider is still going on: no figure yet
            response.raw_headers.append(self._overhead_header(routed))
        self._adapted(response)
        return response

    def _adapted(self, response: Response) -> None:
        """What the format changed rather than refuse, named for the client."""
        if self.adapted:
            response.raw_headers.append((b"x-gateway-adapted", ", ".join(self.adapted).encode()))

    async def _prepare_media(self, body: ChatCompletionRequest, card: ModelCard) -> bool:
        """The media intake, stopped if the client goes away meanwhile (a PDF or a video can take many
        seconds: nobody would read the answer). False if it did."""
        with DisconnectWatch(self.receive) as watch:
            try:
                await self.gateway.media.prepare(body, card, self.info.account_id)
            except asyncio.CancelledError:
                if not watch.fired:
                    raise  # a shutdown
                watch.absorb()
                if self.meta is not None:
                    self.meta.client_closed = True
                return False
        return True


class Served(Response):
    """What a generation route registered on the framework returns: the serving object does the rest.
    (FastPath serves these routes before the framework sees them; this keeps them right if it ever does.)"""

    background = None

    def __init__(self, request: Request, fmt: type[WireFormat]) -> None:  # nothing is rendered here
        self.request, self.format = request, fmt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.request.app.state.gateway
        await Completion(gateway, self.format(), scope, receive, send).serve()
