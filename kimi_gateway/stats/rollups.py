"""Usage rolled up from generation records: hourly and daily buckets, and what one record adds to them.

`contributions` is the one definition of what a record adds: the incremental path (each batch the
recorder writes, in its transaction) and the rebuild (`kimi-gateway stats rebuild`) both use it, so they
agree by construction; a test checks they do after two replicas wrote the same buckets at once.

The upsert adds to a bucket's figures (`x = x + excluded.x`): on PostgreSQL the row lock makes two
replicas adding to one bucket at once both count; SQLite has one writer at a time.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from kimi_gateway.money import nano
from kimi_gateway.storage.db import Database, utc
from kimi_gateway.storage.models import GenerationRecord, UsageBucket

HOUR, DAY = 3600, 86400
HOURLY, DAILY = "h", "d"
KEEP = {HOURLY: timedelta(hours=48), DAILY: timedelta(days=400)}
# Upper bounds (ms) of the latency histogram's buckets; the last bucket takes the rest.
LATENCY_BOUNDS = (250, 500, 1000, 2000, 5000, 10000, 30000)
_HISTOGRAM = tuple(f"lat_{i}" for i in range(len(LATENCY_BOUNDS) + 1))
KEY = ("granularity", "start", "model", "provider", "account_id", "key_hash", "app")
SUMS = (
    "requests",
    "errors",
    "prompt_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "completion_tokens",
    "cost_nano",
    "latency_ms_x100_sum",
    "ttft_ms_x100_sum",
    "ttft_count",
    *_HISTOGRAM,
)
_ZERO = dict.fromkeys(SUMS, 0)


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return utc(value).timestamp()
    return float(value)


def contributions(records: Iterable[Mapping[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Bucket key -> the figures these generation records add to it (as the journal keeps them: `cost`
    in nano-dollars, `created_at` in epoch seconds, or rows read back from the table)."""
    buckets: dict[tuple[Any, ...], dict[str, Any]] = {}
    for record in records:
        at = _epoch(record["created_at"])
        latency = record.get("latency_ms")
        ttft = record.get("ttft_ms")
        for granularity, size in ((HOURLY, HOUR), (DAILY, DAY)):
            key = (
                granularity,
                int(at // size * size),
                record["model"] or "",
                record.get("provider") or "",
                record.get("account_id") or "",
                record.get("key_hash") or "",
                record.get("app_referer") or "",
            )
            figures = buckets.get(key)
            if figures is None:
                figures = buckets[key] = {**_ZERO, "app_title": ""}
            figures["requests"] += 1
            figures["errors"] += record["status"] == "error"
            figures["prompt_tokens"] += record.get("prompt_tokens") or 0
            figures["cached_tokens"] += record.get("cached_tokens") or 0
            figures["reasoning_tokens"] += record.get("reasoning_tokens") or 0
            figures["completion_tokens"] += record.get("completion_tokens") or 0
            figures["cost_nano"] += int(record.get("cost") or 0)
            if latency is not None:
                figures["latency_ms_x100_sum"] += round(float(latency) * 100)
                figures[_HISTOGRAM[bisect.bisect_left(LATENCY_BOUNDS, float(latency))]] += 1
            if ttft is not None:
                figures["ttft_ms_x100_sum"] += round(float(ttft) * 100)
                figures["ttft_count"] += 1
            if record.get("app_title"):
                figures["app_title"] = record["app_title"]
    return buckets


@cache
def _upsert(postgres: bool) -> str:
    columns = (*KEY, "app_title", *SUMS)
    marks = ", ".join(f"${i}" if postgres else "?" for i in range(1, len(columns) + 1))
    added = ", ".join(f"{c} = usage_buckets.{c} + excluded.{c}" for c in SUMS)
    # The title of the latest request wins (an empty one leaves the title as it was).
    title = (
        "app_title = CASE WHEN excluded.app_title = '' THEN usage_buckets.app_title "
        "ELSE excluded.app_title END"
    )
    return (
        f"INSERT INTO usage_buckets ({', '.join(columns)}) VALUES ({marks}) "
        f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {added}, {title}"
    )


def _bind(key: tuple[Any, ...], figures: dict[str, Any], postgres: bool) -> tuple[Any, ...]:
    start = datetime.fromtimestamp(key[1], UTC)
    when: Any = start if postgres else start.strftime("%Y-%m-%d %H:%M:%S.%f")
    return (key[0], when, *key[2:], figures["app_title"], *(figures[c] for c in SUMS))


async def add(connection: AsyncConnection, postgres: bool, records: Sequence[Mapping[str, Any]]) -> None:
    """Add these (newly written) records to their buckets, on the caller's transaction. Rows go in a
    fixed order, so two transactions touching the same buckets lock them in the same order (no deadlock)."""
    buckets = contributions(records)
    if buckets:
        rows = [_bind(key, buckets[key], postgres) for key in sorted(buckets)]
        await connection.exec_driver_sql(_upsert(postgres), rows)


async def purge(db: Database, now: datetime | None = None) -> None:
    now = now or datetime.now(UTC)
    async with db.engine.begin() as connection:
        for granularity, keep in KEEP.items():
            await connection.execute(
                delete(UsageBucket).where(
                    UsageBucket.granularity == granularity, UsageBucket.start < now - keep
                )
            )


async def rebuild(db: Database, since: datetime) -> int:
    """Recompute every bucket from `since` (rounded down to its UTC day) from the generation records;
    returns how many records were read."""
    since = since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    postgres = db.dialect == "postgresql"
    columns = [c for c in GenerationRecord.__table__.columns]
    read = 0
    async with db.engine.begin() as connection:
        await connection.execute(delete(UsageBucket).where(UsageBucket.start >= since))
        result = await connection.stream(select(*columns).where(GenerationRecord.created_at >= since))
        async for chunk in result.mappings().partitions(5000):
            records = [{**row, "cost": nano(row["cost"] or 0)} for row in chunk]
            read += len(records)
            await add(connection, postgres, records)
    return read
