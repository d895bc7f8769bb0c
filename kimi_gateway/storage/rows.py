"""The generation row as it travels before and after the database: built at settlement (accounts/billing.py),
written to the journal and queued (accounts/recorder.py), inserted, and read back for
`/api/v1/generation`. One typed shape for all of them; the table's columns are `GenerationRecord`'s (a test
holds the two to the same names)."""

from __future__ import annotations

from typing import TypedDict

from kimi_gateway.money import nano
from kimi_gateway.storage.models import GenerationRecord


class GenerationRow(TypedDict):
    id: str
    account_id: str | None
    key_hash: str | None
    model: str
    provider: str | None
    status: str  # success, error, cancelled, interrupted
    finish_reason: str | None
    streamed: bool
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    cost: int  # nano-dollars (the column holds dollars)
    latency_ms: float | None
    ttft_ms: float | None
    app_referer: str | None
    app_title: str | None
    created_at: float  # epoch seconds
    request_id: str | None  # a tool loop's model calls: the request's id (its first call's)
    tool_calls: int  # the server-side tool calls this model call made
    tool_cost: int  # their price, nano-dollars (part of `cost`)


def row_of(record: GenerationRecord) -> GenerationRow:
    """A stored generation, in the row's shape."""
    return {
        "id": record.id,
        "account_id": record.account_id,
        "key_hash": record.key_hash,
        "model": record.model,
        "provider": record.provider,
        "status": record.status,
        "finish_reason": record.finish_reason,
        "streamed": record.streamed,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cached_tokens": record.cached_tokens,
        "reasoning_tokens": record.reasoning_tokens,
        "cost": nano(record.cost),
        "latency_ms": float(record.latency_ms) if record.latency_ms is not None else None,
        "ttft_ms": float(record.ttft_ms) if record.ttft_ms is not None else None,
        "app_referer": record.app_referer,
        "app_title": record.app_title,
        "created_at": record.created_at.timestamp(),
        "request_id": record.request_id,
        "tool_calls": record.tool_calls,
        "tool_cost": nano(record.tool_cost),
    }
