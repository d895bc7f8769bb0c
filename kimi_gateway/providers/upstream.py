"""Hosted and self-hosted OpenAI-compatible providers, over one shared pooled HTTP client.

Upstream requests always stream, so a non-streaming client and a streaming one take the same path, and a
provider that fails before its first event can be left for the next endpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from kimi_gateway.catalog import ModelCard
from kimi_gateway.config import TimeoutsConfig
from kimi_gateway.errors import APIError, UpstreamError, invalid_request
from kimi_gateway.providers.base import Endpoint
from kimi_gateway.providers.client import ConnectTimeout, Target, UpstreamClient
from kimi_gateway.providers.events import Event
from kimi_gateway.providers.http1 import ConnectionFailed, Response
from kimi_gateway.providers.normalize import ChunkNormalizer
from kimi_gateway.providers.sse import sse_data
from kimi_gateway.providers.wire import WireStyle
from kimi_gateway.schema.chat import ChatCompletionRequest

# Statuses that say "try someone else": rate limits, server errors, and our key being refused there.
_RETRYABLE = {401, 403, 408, 409, 425, 429}


def _error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace") or "no body"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if isinstance(error, str):
        return error
    return str(data)[:200]


def _retry_after(response: Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def status_error(provider: str, response: Response, body: bytes) -> UpstreamError:
    status = response.status
    retryable = status >= 500 or status in _RETRYABLE
    message = _error_message(body)
    # A client mistake upstream is the client's (400); a provider's failure is a bad gateway (502).
    client_status = status if status in {400, 404, 413, 422} else (429 if status == 429 else 502)
    return UpstreamError(
        client_status,
        f"{provider} returned {status}: {message}",
        provider=provider,
        retryable=retryable,
        retry_after=_retry_after(response) if status == 429 else None,
        upstream_status=status,
    )


def _failure(name: str, status: int, why: str) -> UpstreamError:
    return UpstreamError(status, f"{name}: {why}", provider=name, retryable=True)


class UpstreamGeneration:
    def __init__(
        self,
        provider: UpstreamProvider,
        body: dict[str, Any],
        endpoint: Endpoint,
        normalizer: ChunkNormalizer,
        target: Target,
    ) -> None:
        self._provider = provider
        self._target = target
        self._body = body
        self._endpoint = endpoint
        self._normalizer = normalizer
        self._response: Response | None = None

    def cancel(self) -> None:
        if self._response is not None:
            # Closing drops the connection, which is how the upstream hears of the cancellation.
            self._response.close()

    async def events(self) -> AsyncIterator[list[Event]]:
        provider = self._provider
        name = provider.display_name  # errors name the provider as users know it
        timeouts = provider.timeouts
        feed = self._normalizer.feed_data
        try:
            payload = orjson.dumps(self._body)
        except orjson.JSONEncodeError as exc:
            # A value JSON cannot carry on (an integer past 64 bits, a lone surrogate among the request's
            # extra fields): the client's to fix, and no provider would take it either.
            raise APIError(
                400, f"The request holds a value that cannot be sent on: {exc}.", code="invalid_request_body"
            ) from None
        try:
            try:
                response = self._response = await provider.client.post(
                    self._target,
                    payload,
                    timeouts.connect,
                    timeouts.idle,
                    timeouts.first_byte,
                )
                if response.status >= 400:
                    raise status_error(name, response, await response.read())
                batches = sse_data(response.reads())
                first = await anext(batches, None)
                response.started()
            except ConnectTimeout:
                # Said apart from a slow answer: the attempts a client sees should tell the two apart.
                raise _failure(name, 504, f"could not connect within {timeouts.connect:g}s") from None
            except TimeoutError:
                raise _failure(name, 504, f"no response within {timeouts.first_byte:g}s") from None
            # Read on past [DONE] to the end of the body: a response released before its last byte takes
            # its connection out of the pool instead of returning it.
            batch = first
            while batch is not None:
                events: list[Event] = []
                try:
                    feed(batch, events)
                except Exception:
                    if events:
                        yield events  # what came before a failure in the same read still counts
                    raise
                if events:
                    yield events
                batch = await anext(batches, None)
            normalizer = self._normalizer
            if not normalizer.finished:
                raise _failure(name, 502, "the stream ended before the response was complete")
            yield [normalizer.done(self._endpoint.model)]
        except TimeoutError:
            raise _failure(name, 504, "timed out waiting for data") from None
        except ConnectionFailed as exc:
            raise _failure(name, 502, f"connection failed ({exc})") from None
        except OSError as exc:  # refused, unreachable, name not found, TLS refused
            raise _failure(name, 502, f"connection failed ({type(exc).__name__})") from None
        except (orjson.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError, ValueError):
            # Valid JSON of the wrong shape (a list for choices, a string for a delta) lands here too.
            raise _failure(name, 502, "sent a malformed chunk") from None
        finally:
            if self._response is not None:
                self._response.release()


class UpstreamProvider:
    def __init__(
        self,
        name: str,
        display_name: str,
        base_url: str,
        style: WireStyle,
        api_key: str | None,
        timeouts: TimeoutsConfig,
        endpoints: list[Endpoint],
        client: UpstreamClient,
    ) -> None:
        self.name = name
        self.display_name = display_name
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.style = style
        self.timeouts = timeouts
        self.client = client
        self._endpoints = endpoints
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.target = Target.post(self.url, headers)
        self.completions_target = Target.post(base_url.rstrip("/") + "/completions", headers)

    def endpoints(self) -> list[Endpoint]:
        return self._endpoints

    def is_ready(self) -> bool:
        return True

    async def start(
        self,
        request: ChatCompletionRequest,
        endpoint: Endpoint,
        card: ModelCard,
        drop: frozenset[str] = frozenset(),
    ) -> UpstreamGeneration:
        if request.n > 1 and "n" not in endpoint.supported_parameters:
            raise invalid_request(f"{self.name} does not support n > 1.", param="n")
        if request.raw_prompt is not None:
            body = self.style.build_completion_body(request, endpoint, card, drop)
            target = self.completions_target
        else:
            body = self.style.build_body(request, endpoint, card, drop)
            target = self.target
        chat = request.raw_prompt is None  # a raw prompt's continuation is text as it comes, markers and all
        normalizer = ChunkNormalizer(
            self.display_name,
            raw_output=chat and self.style.raw_output,
            start_in_reasoning=chat and self.style.starts_in_reasoning(request, card),
            exclude_reasoning=request.reasoning_excluded,
        )
        return UpstreamGeneration(self, body, endpoint, normalizer, target)
