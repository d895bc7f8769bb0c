"""Storage: SQLAlchemy models, the database engine, and Alembic migrations (SQLite by default, PostgreSQL)."""

from kimi_gateway.storage.db import Database, database_url

__all__ = ["Database", "database_url"]
