"""A generation request on HTTP: the request core (core/exchange.py) adapted to ASGI.

The key and the body are read here, the wire format (http/formats/) parses the body into the gateway's
request and renders what the core returns; everything between (routing, admission, media, the
generation, settlement) is the core's. One `Completion` per request, from its first byte to its log line.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from kimi_gateway.accounts.keys import KeyStore
from kimi_gateway.core.exchange import Exchange, Parts
from kimi_gateway.errors import APIError, shutting_down
from kimi_gateway.http.auth import authenticate
from kimi_gateway.http.disconnects import client_gone
from kimi_gateway.http.errors import internal_api_error
from kimi_gateway.http.formats.base import FormatContext, WireFormat
from kimi_gateway.http.middleware import NOSNIFF, begin, log_request, request_id_header, route_path
from kimi_gateway.http.replies import FastSSEResponse
from kimi_gateway.logs import logger
from kimi_gateway.outcome import RequestOutcome

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True, slots=True)
class Services:
    """What serving a generation route takes from the running gateway."""

    core: Parts
    keys: KeyStore
    formats: FormatContext


class Completion:
    """A generation request (the routes of http/dispatch.py), one instance per request."""

    __slots__ = ("exchange", "format", "info", "receive", "scope", "send", "services")

    def __init__(
        self, services: Services, fmt: WireFormat, scope: Scope, receive: Receive, send: Send
    ) -> None:
        self.services, self.format = services, fmt
        self.scope, self.receive, self.send = scope, receive, send
        self.info = begin(scope)  # the request id, and the one log line's record
        outcome = RequestOutcome(self.info.request_id, route_path(scope))
        # Not a bound method of this object: the exchange would then hold it, a cycle per request that only
        # the garbage collector can free (and its passes cost more than the whole request).
        self.exchange = Exchange(services.core, outcome, scope["headers"], client_gone(receive))

    async def serve(self) -> None:
        response: Response | None = None
        exchange = self.exchange
        try:
            try:
                response = await self._respond()
            except APIError as exc:
                response = self.format.error(exc)
                exchange.outcome.error_code, exchange.outcome.error = exc.code or exc.type, exc.message[:500]
            except asyncio.CancelledError:
                # A client leaving is absorbed where it is watched: this is the server stopping a request
                # past its graceful shutdown. The client hears so, in its format, and may retry elsewhere.
                task = asyncio.current_task()
                assert task is not None
                task.uncancel()
                if exchange.stream is not None and not exchange.stream.stopped:
                    await exchange.stream.stop()
                response = self.format.error(shutting_down())
            except Exception as exc:
                response = self.format.error(internal_api_error(self.scope["path"], exc))
            response.raw_headers += (request_id_header(self.info), NOSNIFF)
            await response(self.scope, self.receive, self.send)
        finally:
            stream = exchange.stream
            if stream is not None and not stream.stopped:  # its frames never ran (they stop it themselves)
                await stream.stop()
            status = response.status_code if response is not None else 500
            exchange.settle(status)
            if logger.isEnabledFor(logging.INFO):
                self._log(status)

    def _log(self, status: int) -> None:
        """The request's log line, from its outcome."""
        info, outcome = self.info, self.exchange.outcome
        info.model, info.stream = outcome.requested_model, outcome.stream
        notes: dict[str, str] = {}
        if outcome.error_code is not None:
            notes["error_code"] = outcome.error_code
            notes["error"] = outcome.error or ""
        if outcome.adapted:
            notes["adapted"] = ", ".join(outcome.adapted)
        info.notes = notes or None
        last = outcome.last
        if last is not None:
            info.model = last.model
            info.provider = last.provider_name
            info.finish_reason = last.finish_reason
            info.ttft_ms = last.ttft_ms
            info.client_closed = last.client_closed
            usage = outcome.usage() if last.usage is not None else None
            if usage is not None:
                info.cost_nano = outcome.cost_nano() if last.cost_nano is not None else None
                info.prompt_tokens = usage.prompt_tokens
                info.completion_tokens = usage.completion_tokens
                info.cached_tokens = usage.cached_tokens
                info.reasoning_tokens = usage.reasoning_tokens
        log_request(self.scope, info, status, outcome.started)

    def _overhead_header(self) -> tuple[bytes, bytes]:
        """The gateway's own time so far, given to the client as `X-Gateway-Overhead-Ms`."""
        return (b"x-gateway-overhead-ms", b"%.3f" % (self.exchange.overhead() * 1000))

    async def _respond(self) -> Response:
        services, exchange = self.services, self.exchange
        key = await authenticate(services.keys, self.scope)
        account = key.account_id if key is not None else None
        exchange.outcome.account_id = self.info.account_id = account
        request = Request(self.scope, self.receive, self.send)
        body = await self.format.parse(request, services.formats, account)
        run = await exchange.prepare(key, body, self.format.new_id(), self.format.adaptations)
        if run is None:
            return Response(status_code=499)  # the client left during media intake
        if not body.stream:
            completion = await exchange.complete(run)
            if completion is None:
                return Response(status_code=499)
            response = await self.format.render(completion, run.outcome)
            response.raw_headers.append(self._overhead_header())
            self._adapted(response)
            return response
        # The first events are awaited briefly: an early failure still gets a proper status and JSON error.
        stream = await exchange.start_stream(run)
        encoder = self.format.encoder(run.outcome)
        frames = stream.frames(encoder, services.core.keepalive_seconds)
        response = FastSSEResponse(frames, _SSE_HEADERS, lambda: encoder.failure(shutting_down()))
        if stream.started:  # else the wait on the provider is still going on: no figure yet
            response.raw_headers.append(self._overhead_header())
        self._adapted(response)
        return response

    def _adapted(self, response: Response) -> None:
        """What was changed rather than refused, named for the client; a swarm run's id."""
        adapted = self.exchange.outcome.adapted
        if adapted:
            response.raw_headers.append((b"x-gateway-adapted", ", ".join(adapted).encode()))
        run = self.exchange.run
        if run is not None and run.outcome.agent_run is not None:
            response.raw_headers.append((b"x-agent-run-id", run.outcome.agent_run.encode()))
