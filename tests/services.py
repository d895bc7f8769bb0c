"""Real PostgreSQL and Redis for the multi-instance tests: skipped where absent, required in CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from kimi_gateway import testing
from kimi_gateway.testing import create_postgres_database

POSTGRES = os.environ.get("KG_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def require(service: str, reason: str) -> NoReturn:
    # CI runs on a machine that has these services: a skip there would hide a broken promise.
    if os.environ.get("CI") == "true":
        pytest.fail(f"{service} is required in CI: {reason}")
    pytest.skip(f"{service} unavailable: {reason}")


def fresh_postgres_database() -> str:
    """Create an empty database for one test and return its URL (the caller drops it)."""
    try:
        return create_postgres_database(POSTGRES, "kg_test_")
    except Exception as exc:  # connection refused, auth, missing driver: all mean "not here"
        require("PostgreSQL", f"{POSTGRES}: {type(exc).__name__}: {exc}")


def drop_postgres_database(url: str) -> None:
    testing.drop_postgres_database(POSTGRES, url)


REDIS = os.environ.get("KG_TEST_REDIS", "redis://127.0.0.1:6379/0")


def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=2).ping()
    except Exception as exc:
        require("Redis", f"{REDIS}: {type(exc).__name__}: {exc}")
    return REDIS


def clear_redis(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
