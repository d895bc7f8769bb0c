"""What the usage buckets answer: an account's activity (OpenRouter's /activity), and a model page's
public figures: tokens and requests over time, the apps using it, and each provider's uptime.

Public figures never carry an account or a key: apps are named by their own headers only."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from kimi_gateway.money import usd
from kimi_gateway.stats.rollups import DAILY, HOURLY
from kimi_gateway.stats.uptime import UptimeStore
from kimi_gateway.storage.db import Database, utc
from kimi_gateway.storage.models import UsageBucket as U

ACTIVITY_DAYS = 30
# period: (bucket granularity, how far back, uptime step in seconds)
PERIODS = {
    "day": (HOURLY, timedelta(days=1), 3600),
    "week": (DAILY, timedelta(days=7), 86400),
    "month": (DAILY, timedelta(days=30), 86400),
}
TOP_APPS = 20


def _today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def activity(
    db: Database, account_id: str, key_hash: str | None = None, day: date | None = None
) -> list[dict[str, Any]]:
    """The last 30 UTC days (today included) by date, model and provider."""
    since = _today() - timedelta(days=ACTIVITY_DAYS - 1)
    query = (
        select(
            U.start,
            U.model,
            U.provider,
            func.sum(U.requests),
            func.sum(U.prompt_tokens),
            func.sum(U.completion_tokens),
            func.sum(U.reasoning_tokens),
            func.sum(U.cached_tokens),
            func.sum(U.cost_nano),
        )
        .where(U.granularity == DAILY, U.account_id == account_id, U.start >= since)
        .group_by(U.start, U.model, U.provider)
        .order_by(U.start.desc(), U.model, U.provider)
    )
    if key_hash is not None:
        query = query.where(U.key_hash == key_hash)
    if day is not None:
        query = query.where(U.start == datetime(day.year, day.month, day.day, tzinfo=UTC))
    async with db.session() as session:
        rows = (await session.execute(query)).all()
    return [
        {
            "date": utc(start).date().isoformat(),
            "model": model,
            "model_permaslug": model,
            "provider_name": provider or None,
            "usage": usd(int(cost)),
            "byok_usage_inference": 0,
            "requests": int(requests),
            "prompt_tokens": int(prompt),
            "completion_tokens": int(completion),
            "reasoning_tokens": int(reasoning),
            "cached_tokens": int(cached),
        }
        for start, model, provider, requests, prompt, completion, reasoning, cached, cost in rows
    ]


async def model_stats(db: Database, uptime: UptimeStore, model: str, period: str) -> dict[str, Any]:
    granularity, span, step = PERIODS[period]
    now = datetime.now(UTC)
    since = (now - span).replace(minute=0, second=0, microsecond=0)
    if granularity == DAILY:
        since = since.replace(hour=0) + timedelta(days=1)
    where = (U.granularity == granularity, U.model == model, U.start >= since)
    series_query = (
        select(
            U.start,
            func.sum(U.requests),
            func.sum(U.prompt_tokens),
            func.sum(U.cached_tokens),
            func.sum(U.reasoning_tokens),
            func.sum(U.completion_tokens),
        )
        .where(*where)
        .group_by(U.start)
        .order_by(U.start)
    )
    tokens = func.sum(U.prompt_tokens + U.completion_tokens)
    apps_query = (
        select(U.app, func.max(U.app_title), tokens, func.sum(U.requests))
        .where(*where, U.app != "")
        .group_by(U.app)
        .order_by(tokens.desc())
        .limit(TOP_APPS)
    )
    async with db.session() as session:
        points = (await session.execute(series_query)).all()
        apps = (await session.execute(apps_query)).all()
    uptime_series = await uptime.series(model, since, step)
    return {
        "model": model,
        "period": period,
        "since": since.isoformat(),
        "activity": [
            {
                "start": utc(start).isoformat(),
                "requests": int(requests),
                # Prompt tokens split into fresh and cached input; reasoning is part of completion.
                "prompt_tokens": int(prompt) - int(cached),
                "cached_tokens": int(cached),
                "reasoning_tokens": int(reasoning),
                "completion_tokens": int(completion) - int(reasoning),
            }
            for start, requests, prompt, cached, reasoning, completion in points
        ],
        "apps": [
            {"name": title or url, "url": url, "tokens": int(total), "requests": int(requests)}
            for url, title, total, requests in apps
        ],
        "uptime": {
            provider: [
                {
                    "start": datetime.fromtimestamp(at, UTC).isoformat(),
                    "uptime": o.uptime,
                    "successes": o.successes,
                    "errors": o.errors,
                    "rate_limited": o.rate_limited,
                }
                for at, o in points_
            ]
            for provider, points_ in uptime_series.items()
        },
    }
