"""The one exception type every layer raises for a client-visible failure.

The HTTP layer renders it as OpenAI's error body `{"error": {"message", "type", "param", "code"}}` with
`status`; nothing else about an error reaches the client.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        # Every 400 says what kind of mistake it was, as OpenAI's do.
        self.code = code if code is not None or status != 400 else "invalid_value"
        self.headers = headers or {}
        self.metadata = metadata

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        if self.metadata is not None:
            error["metadata"] = self.metadata
        return {"error": error}


def invalid_request(message: str, *, param: str | None = None, code: str = "invalid_value") -> APIError:
    """A 400 for a value the request should not have sent; every one carries a code (OpenAI's)."""
    return APIError(400, message, param=param, code=code)


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model '{model}' does not exist. GET /v1/models lists the models this gateway serves.",
        param="model",
        code="model_not_found",
    )


def context_length_exceeded(context_length: int, prompt_tokens: int, completion_tokens: int) -> APIError:
    total = prompt_tokens + completion_tokens
    return APIError(
        400,
        f"This model's maximum context length is {context_length} tokens. However, you requested {total} "
        f"tokens ({prompt_tokens} in the messages, {completion_tokens} in the completion). Please reduce the "
        "length of the messages or completion.",
        param="messages",
        code="context_length_exceeded",
    )


def unsupported_value(param: str, message: str) -> APIError:
    return APIError(400, message, param=param, code="unsupported_value")


def overloaded(message: str, retry_after: int) -> APIError:
    return APIError(
        503,
        message,
        type="server_error",
        code="server_overloaded",
        headers={"Retry-After": str(retry_after)},
    )


def shutting_down() -> APIError:
    """The server stopped a request it could not finish within its graceful shutdown: retry elsewhere."""
    return APIError(
        503,
        "The server is shutting down; retry the request.",
        type="server_error",
        code="server_shutting_down",
        headers={"Retry-After": "1"},
    )


def provider_unavailable(message: str) -> APIError:
    return APIError(503, message, type="server_error", code="provider_unavailable")


class UpstreamError(APIError):
    """A provider failed. `retryable` failures move the request on to the next endpoint."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        provider: str,
        retryable: bool,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        counts_against_provider: bool = True,
    ) -> None:
        super().__init__(
            status,
            message,
            type="upstream_error",
            code="upstream_error",
            metadata={"provider_name": provider},
        )
        self.provider = provider
        self.retryable = retryable
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        # False for a failure one request caused (it crashed the embedded engine): the provider's breaker,
        # shared by every tenant, does not hear of it.
        self.counts_against_provider = counts_against_provider
