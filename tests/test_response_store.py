"""Stored Responses kept as chains (storage/responses.py), on SQLite and PostgreSQL: branching off a large
response stores only the branches, reading a chain gives the whole conversation, deletes keep what others
continue, and the account's storage quota counts them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select, update

from kimi_gateway.errors import APIError
from kimi_gateway.storage.db import Database, database_url, utc
from kimi_gateway.storage.models import StoredResponse
from kimi_gateway.storage.quota import stored_bytes
from kimi_gateway.storage.responses import Kept, NewResponse, ResponseStore
from tests import services


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield database_url(None, tmp_path)
        return
    made = services.fresh_postgres_database()
    yield database_url(made, tmp_path)
    services.drop_postgres_database(made)


def _run(url: str, scenario: Any) -> None:
    async def main() -> None:
        db = Database(url)
        await db.migrate()
        try:
            await scenario(db)
        finally:
            await db.close()

    asyncio.run(main())


def _new(response_id: str, text: str, previous: Kept | None = None) -> NewResponse:
    turn = [{"role": "user", "content": text}, {"role": "assistant", "content": f"re {response_id}"}]
    return NewResponse({"id": response_id, "object": "response"}, [], turn, previous)


async def _rows(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(StoredResponse)) or 0)


def test_branches_store_only_themselves_and_read_back_whole(url: str) -> None:
    image = "data:image/png;base64," + "A" * 2_000_000  # what a large image part weighs in a turn

    async def scenario(db: Database) -> None:
        store = ResponseStore(db, timedelta(days=1), quota=10**9)
        await store.save("acct", _new("resp_root", image))
        root = await store.get("acct", "resp_root")
        for i in range(10):
            await store.save("acct", _new(f"resp_b{i}", f"branch {i}", root))
        async with db.session() as session:
            used = await stored_bytes(session, "acct")
        # Before: each branch kept the whole context again, 22 MB for these eleven rows.
        assert 2_000_000 < used < 2_000_000 + 11 * 1_000, used
        branch = await store.get("acct", "resp_b3")
        assert branch.chain == ["resp_b3", "resp_root"]
        assert [m["content"] for m in branch.context] == [image, "re resp_root", "branch 3", "re resp_b3"]
        await store.save("acct", _new("resp_deep", "deeper", branch))
        deep = await store.get("acct", "resp_deep")
        assert deep.chain == ["resp_deep", "resp_b3", "resp_root"] and len(deep.context) == 6
        with pytest.raises(APIError) as other:
            await store.get("someone-else", "resp_b3")
        assert other.value.status == 404

    _run(url, scenario)


def test_deleting_keeps_what_others_continue_then_goes_with_them(url: str) -> None:
    async def scenario(db: Database) -> None:
        store = ResponseStore(db, timedelta(days=1), quota=10**9)
        await store.save("acct", _new("resp_a", "first"))
        await store.save("acct", _new("resp_b", "second", await store.get("acct", "resp_a")))
        await store.delete("acct", "resp_a")
        with pytest.raises(APIError):
            await store.get("acct", "resp_a")  # gone for its owner
        kept = await store.get("acct", "resp_b")  # still whole for the response that continues it
        assert [m["content"] for m in kept.context] == ["first", "re resp_a", "second", "re resp_b"]
        assert await _rows(db) == 2
        await store.delete("acct", "resp_b")
        assert await _rows(db) == 0  # the hidden first went with its last continuation

    _run(url, scenario)


def test_continuing_extends_the_ancestors_and_old_rows_still_read(url: str) -> None:
    async def scenario(db: Database) -> None:
        store = ResponseStore(db, timedelta(days=1), quota=10**9)
        await store.save("acct", _new("resp_old", "old"))
        soon = datetime.now(UTC) + timedelta(seconds=30)
        async with db.session() as session, session.begin():
            await session.execute(
                update(StoredResponse).where(StoredResponse.id == "resp_old").values(expires_at=soon)
            )
        await store.save("acct", _new("resp_new", "new", await store.get("acct", "resp_old")))
        async with db.session() as session:
            old = await session.get(StoredResponse, "resp_old")
            new = await session.get(StoredResponse, "resp_new")
            assert old is not None and new is not None
            assert utc(old.expires_at) >= utc(new.expires_at) > soon
            # A row from before chains: its whole conversation in `context`, no turn, no parent.
            legacy = [{"role": "user", "content": "legacy"}, {"role": "assistant", "content": "ok"}]
            session.add(
                StoredResponse(
                    id="resp_legacy",
                    account_id="acct",
                    response=orjson.dumps({"id": "resp_legacy"}).decode(),
                    input_items="[]",
                    context=orjson.dumps(legacy).decode(),
                    expires_at=datetime.now(UTC) + timedelta(days=1),
                )
            )
            await session.commit()
        assert (await store.get("acct", "resp_legacy")).context == legacy

    _run(url, scenario)


def test_the_storage_quota_counts_stored_responses(url: str) -> None:
    async def scenario(db: Database) -> None:
        store = ResponseStore(db, timedelta(days=1), quota=1_500_000)
        await store.check_quota("acct")
        await store.save("acct", _new("resp_big", "x" * 1_600_000))
        with pytest.raises(APIError) as refused:
            await store.check_quota("acct")
        assert refused.value.status == 400 and refused.value.code == "storage_quota_exceeded"
        await store.check_quota("another")  # per account
        await store.delete("acct", "resp_big")
        await store.check_quota("acct")

    _run(url, scenario)


def test_expired_responses_do_not_count_and_a_vanished_parent_keeps_the_whole_context(url: str) -> None:
    async def scenario(db: Database) -> None:
        store = ResponseStore(db, timedelta(days=1), quota=1_500_000)
        await store.save("acct", _new("resp_old", "x" * 1_600_000))
        past = datetime.now(UTC) - timedelta(seconds=1)
        async with db.session() as session, session.begin():
            await session.execute(
                update(StoredResponse).where(StoredResponse.id == "resp_old").values(expires_at=past)
            )
        await store.check_quota("acct")  # expired, not yet purged: not counted
        # The parent is deleted while its continuation is being made: the new row keeps it all.
        await store.save("acct", _new("resp_a", "first"))
        parent = await store.get("acct", "resp_a")
        await store.delete("acct", "resp_a")
        await store.save("acct", _new("resp_b", "second", parent))
        kept = await store.get("acct", "resp_b")
        assert [m["content"] for m in kept.context] == ["first", "re resp_a", "second", "re resp_b"]
        assert kept.chain == ["resp_b"]

    _run(url, scenario)
