"""Responses kept for the Responses API (`store`, `previous_response_id`, GET and DELETE by id).

Each belongs to the account that made it: another account's id is answered 404, as if it did not exist.
A response is kept for `retention` and then treated as gone; expired rows are deleted as new ones are
written, at most once a minute.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import delete

from kimi_gateway.errors import APIError
from kimi_gateway.storage.db import Database, utc
from kimi_gateway.storage.models import StoredResponse

_PURGE_EVERY = 60.0


def not_found(response_id: str) -> APIError:
    return APIError(
        404, f"No response found with id '{response_id}'.", param="response_id", code="response_not_found"
    )


@dataclass(frozen=True, slots=True)
class Kept:
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    context: list[dict[str, Any]]


class ResponseStore:
    def __init__(self, db: Database, retention: timedelta) -> None:
        self.db = db
        self.retention = retention
        self._purged = 0.0

    async def save(
        self,
        account_id: str | None,
        response: dict[str, Any],
        input_items: list[dict[str, Any]],
        context: list[dict[str, Any]],
    ) -> None:
        now = datetime.now(UTC)
        row = StoredResponse(
            id=response["id"],
            account_id=account_id,
            response=orjson.dumps(response).decode(),
            input_items=orjson.dumps(input_items).decode(),
            context=orjson.dumps(context).decode(),
            created_at=now,
            expires_at=now + self.retention,
        )
        async with self.db.session() as session, session.begin():
            session.add(row)
            if time.monotonic() - self._purged > _PURGE_EVERY:
                self._purged = time.monotonic()
                await session.execute(delete(StoredResponse).where(StoredResponse.expires_at < now))

    async def _row(self, account_id: str | None, response_id: str) -> StoredResponse:
        async with self.db.session() as session:
            row = await session.get(StoredResponse, response_id)
        if row is None or row.account_id != account_id or utc(row.expires_at) <= datetime.now(UTC):
            raise not_found(response_id)
        return row

    async def get(self, account_id: str | None, response_id: str) -> Kept:
        row = await self._row(account_id, response_id)
        return Kept(orjson.loads(row.response), orjson.loads(row.input_items), orjson.loads(row.context))

    async def delete(self, account_id: str | None, response_id: str) -> None:
        await self._row(account_id, response_id)
        async with self.db.session() as session, session.begin():
            await session.execute(delete(StoredResponse).where(StoredResponse.id == response_id))
