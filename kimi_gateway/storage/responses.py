"""Responses kept for the Responses API (`store`, `previous_response_id`, GET and DELETE by id).

Each belongs to the account that made it: another account's id is answered 404, as if it did not exist.

A conversation is kept as a chain: each row holds only its own turn (the messages its request added and its
answer) and the id of the response it continued. Ten small requests branching off one response that holds
a 9 MB image used to store the image ten more times (the whole context per row); they now store their
few hundred bytes each. A chain is read back in one recursive query, root first.

A response is kept for `retention` and then treated as gone; continuing one extends its ancestors' time to
the new response's, so a chain never loses its beginning. Deleting a response that others continue hides
it (404 from then on) and keeps only its turn for them; it goes with the last of them. Expired rows are
deleted as new ones are written, at most once a minute. What an account keeps here counts against its
storage quota, with its files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kimi_gateway.errors import APIError
from kimi_gateway.storage.db import Database, utc
from kimi_gateway.storage.models import StoredResponse
from kimi_gateway.storage.quota import stored_bytes

_PURGE_EVERY = 60.0


def not_found(response_id: str) -> APIError:
    return APIError(
        404, f"No response found with id '{response_id}'.", param="response_id", code="response_not_found"
    )


def quota_exceeded(quota: int) -> APIError:
    return APIError(
        400,
        f"Your stored responses and files exceed the storage quota ({quota:,} bytes): delete responses "
        "(DELETE /v1/responses/{id}) or files, or send `store: false`.",
        param="store",
        code="storage_quota_exceeded",
    )


@dataclass(frozen=True, slots=True)
class Kept:
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    context: list[dict[str, Any]]  # the whole conversation in chat form, root first, its answer included
    chain: list[str] = field(default_factory=list)  # its id and its ancestors', newest first


@dataclass(frozen=True, slots=True)
class NewResponse:
    """What a response adds to its conversation, and where it continues it."""

    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    turn: list[dict[str, Any]]  # the messages its request added, then its answer
    previous: Kept | None = None


class ResponseStore:
    def __init__(self, db: Database, retention: timedelta, quota: int) -> None:
        self.db = db
        self.retention = retention
        self.quota = quota
        self._purged = 0.0

    async def check_quota(self, account_id: str | None) -> None:
        """Before a response is made to be stored: refused while the account is over its quota."""
        async with self.db.session() as session:
            used = await stored_bytes(session, account_id)
        if used >= self.quota:
            raise quota_exceeded(self.quota)

    async def save(self, account_id: str | None, new: NewResponse) -> None:
        now = datetime.now(UTC)
        expires = now + self.retention
        response = orjson.dumps(new.response).decode()
        input_items = orjson.dumps(new.input_items).decode()
        turn = orjson.dumps(new.turn).decode()
        previous = new.previous
        row = StoredResponse(
            id=new.response["id"],
            account_id=account_id,
            response=response,
            input_items=input_items,
            context="",
            turn=turn,
            parent_id=previous.chain[0] if previous is not None else None,
            size=len(response) + len(input_items) + len(turn),
            hidden=False,
            created_at=now,
            expires_at=expires,
        )
        async with self.db.session() as session, session.begin():
            if previous is not None:
                present = await session.scalar(
                    select(func.count()).where(StoredResponse.id.in_(previous.chain))
                )
                if present != len(previous.chain):
                    # Part of the chain went while this response was made (deleted, or purged): it is
                    # kept whole instead, as rows were before chains, rather than missing its beginning.
                    row.parent_id, row.turn = None, None
                    row.context = orjson.dumps([*previous.context, *new.turn]).decode()
                    row.size = len(response) + len(input_items) + len(row.context)
                    previous = None
            session.add(row)
            if previous is not None:
                await session.execute(
                    update(StoredResponse)
                    .where(StoredResponse.id.in_(previous.chain), StoredResponse.expires_at < expires)
                    .values(expires_at=expires)
                )
            if time.monotonic() - self._purged > _PURGE_EVERY:
                self._purged = time.monotonic()
                await session.execute(delete(StoredResponse).where(StoredResponse.expires_at < now))

    async def get(self, account_id: str | None, response_id: str) -> Kept:
        async with self.db.session() as session:
            rows = await _chain(session, response_id)
        leaf = rows[0] if rows else None
        if (
            leaf is None
            or leaf.account_id != account_id
            or leaf.hidden
            or utc(leaf.expires_at) <= datetime.now(UTC)
        ):
            raise not_found(response_id)
        context: list[dict[str, Any]] = []
        for row in reversed(rows):
            # A row from before chains holds its whole context, and no parent.
            context.extend(orjson.loads(row.turn if row.turn is not None else row.context))
        return Kept(
            orjson.loads(leaf.response),
            orjson.loads(leaf.input_items),
            context,
            [row.id for row in rows],
        )

    async def delete(self, account_id: str | None, response_id: str) -> None:
        await self.get(account_id, response_id)  # 404 unless it is the account's, and visible
        async with self.db.session() as session, session.begin():
            target: str | None = response_id
            while target is not None:
                row = await session.get(StoredResponse, target)
                if row is None:
                    break
                continued = await session.scalar(
                    select(func.count()).where(StoredResponse.parent_id == target)
                )
                if continued:
                    # Others continue it: hidden, only its turn kept for them.
                    row.hidden, row.response, row.input_items = True, "{}", "[]"
                    row.size = len(row.turn or row.context)
                    break
                parent = row.parent_id
                await session.delete(row)
                await session.flush()
                # A hidden parent whose last continuation this was goes too.
                target = parent if parent is not None and await _hidden(session, parent) else None


async def _hidden(session: AsyncSession, response_id: str) -> bool:
    row = await session.get(StoredResponse, response_id)
    return row is not None and row.hidden


async def _chain(session: AsyncSession, response_id: str) -> list[StoredResponse]:
    """The response and its ancestors, newest first, in one query."""
    base = (
        select(StoredResponse.id, StoredResponse.parent_id, literal(0).label("depth"))
        .where(StoredResponse.id == response_id)
        .cte("chain", recursive=True)
    )
    parent = select(StoredResponse.id, StoredResponse.parent_id, (base.c.depth + 1).label("depth")).join(
        base, StoredResponse.id == base.c.parent_id
    )
    chain = base.union_all(parent)
    query = select(StoredResponse).join(chain, StoredResponse.id == chain.c.id).order_by(chain.c.depth)
    return list((await session.scalars(query)).all())
