"""The database engine and sessions, and migrations run to head at start-up."""

from __future__ import annotations

import asyncio
import fcntl
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def database_url(configured: str | None, data_dir: Path) -> str:
    """The configured URL with its async driver, or a SQLite file in the data directory."""
    if not configured:
        data_dir = data_dir.expanduser()
        data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{data_dir / 'gateway.db'}"
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if configured.startswith(plain):
            return driver + configured[len(plain) :]
    return configured


def utc(moment: datetime) -> datetime:
    """A datetime read back from the database, made aware: SQLite returns naive ones, written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("kimi_gateway.storage").joinpath("migrations"))
    )
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Blocking: bring the schema to the newest migration (run from a thread, or the CLI). Processes
    starting at once on one SQLite file take turns through a lock file beside it (PostgreSQL: an advisory
    lock in migrations/env.py)."""
    database = url.split(":///", 1)[1] if url.startswith("sqlite") and ":///" in url else None
    if database is None or database in ("", ":memory:"):
        command.upgrade(alembic_config(url), "head")
        return
    with open(database + ".migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            command.upgrade(alembic_config(url), "head")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        sqlite = url.startswith("sqlite")
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_pre_ping=not sqlite,
            # A server that cannot be reached fails fast (asyncpg waits 60 s by default): callers then
            # use their cached figures, or refuse with 503, rather than hang requests behind it.
            connect_args={} if sqlite else {"timeout": 5},
        )
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.session: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    async def migrate(self) -> None:
        await asyncio.to_thread(upgrade, self.url)

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL: readers (balances, the API) no longer block the batch writer or fail it with "database is
    # locked", and a commit appends to the log instead of syncing a rollback journal and the file.
    # synchronous=NORMAL keeps every commit across a process crash; the journal covers the rest.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
