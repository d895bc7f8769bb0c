"""Finished swarm runs (core/swarm.py), stored so that any replica can show a run's tree; a run under way
is read from the memory of the replica serving it."""

from __future__ import annotations

from typing import Any

import orjson

from kimi_gateway.storage.db import Database
from kimi_gateway.storage.models import AgentRunRecord


class AgentRunStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def save(self, account_id: str | None, tree: dict[str, Any]) -> None:
        async with self.db.session() as session, session.begin():
            await session.merge(
                AgentRunRecord(
                    id=tree["id"],
                    account_id=account_id,
                    request_id=tree["request_id"],
                    status=tree["status"],
                    tree=orjson.dumps(tree).decode(),
                )
            )

    async def get(self, run_id: str, account_id: str | None) -> dict[str, Any] | None:
        """The run's tree, if it is the account's (another account's run is not found)."""
        async with self.db.session() as session:
            record = await session.get(AgentRunRecord, run_id)
        if record is None or record.account_id != account_id:
            return None
        tree: dict[str, Any] = orjson.loads(record.tree)
        return tree
