"""An account's generation log, newest first, a page at a time (the console's table), and how many requests
it made in the last minute (its use of the rate limit, as the console shows it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from kimi_gateway.money import nano, usd
from kimi_gateway.storage import Database
from kimi_gateway.storage.db import utc
from kimi_gateway.storage.models import GenerationRecord as G

MAX_PAGE = 100
# Offsets are bounded so that a deep page cannot make the database walk an account's whole history.
MAX_OFFSET = 10_000


async def page(db: Database, account_id: str, limit: int, offset: int) -> list[dict[str, Any]]:
    query = (
        select(G)
        .where(G.account_id == account_id)
        .order_by(G.created_at.desc(), G.id.desc())
        .limit(limit)
        .offset(offset)
    )
    async with db.session() as session:
        rows = (await session.execute(query)).scalars().all()
    return [
        {
            "id": row.id,
            "created_at": utc(row.created_at).isoformat(),
            "model": row.model,
            "provider_name": row.provider,
            "status": row.status,
            "finish_reason": row.finish_reason,
            "streamed": row.streamed,
            "tokens_prompt": row.prompt_tokens,
            "tokens_completion": row.completion_tokens,
            "native_tokens_cached": row.cached_tokens,
            "native_tokens_reasoning": row.reasoning_tokens,
            "total_cost": usd(nano(row.cost)),
            "latency": float(row.latency_ms) if row.latency_ms is not None else None,
            "time_to_first_token": float(row.ttft_ms) if row.ttft_ms is not None else None,
            "http_referer": row.app_referer,
            "app_title": row.app_title,
            "request_id": row.request_id or row.id,
            "server_tool_calls": row.tool_calls,
            "server_tool_cost": usd(nano(row.tool_cost)),
        }
        for row in rows
    ]


async def last_minute(db: Database, account_id: str, key_hash: str) -> int:
    since = datetime.now(UTC) - timedelta(minutes=1)
    query = (
        select(func.count())
        .select_from(G)
        .where(G.account_id == account_id, G.created_at >= since, G.key_hash == key_hash)
    )
    async with db.session() as session:
        return int((await session.execute(query)).scalar_one())
