"""Vector stores (OpenAI's name for them): an account's files, cut into chunks and searched with the
database's own full-text search.

SQLite searches an FTS5 index over the chunks (Porter stemming), ranked by BM25; PostgreSQL a generated
`tsvector` column under a GIN index (English stemming), ranked by `ts_rank_cd`. A query matches chunks that
hold any of its words; ranking puts those with more of them, and rarer ones, first. Scores are in [0, 1)
(half the share of the query's words a chunk holds, half the database's rank): comparable within one
search, not across the two databases. Every read and write is scoped to the calling account: another
account's store is not found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, func, select, text

from kimi_gateway.errors import APIError
from kimi_gateway.ids import new_id
from kimi_gateway.storage.db import Database
from kimi_gateway.storage.models import VectorStore, VectorStoreFile

MAX_STORES = 100  # per account
MAX_FILES = 500  # per store
MAX_QUERY_WORDS = 32
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Hit:
    file_id: str
    chunk: str
    score: float
    attributes: dict[str, Any]


def not_found(kind: str, ident: str) -> APIError:
    return APIError(
        404, f"No {kind} found with id '{ident}'.", type="invalid_request_error", code="not_found"
    )


def _owned(model: Any, account: str | None) -> Any:
    return model.account_id.is_(None) if account is None else model.account_id == account


def _words(query: str) -> list[str]:
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        seen.setdefault(word, None)
    return list(seen)[:MAX_QUERY_WORDS]


class VectorStores:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- stores -------------------------------------------------------------------------------------

    async def create(self, account: str | None, name: str, metadata: dict[str, Any] | None) -> VectorStore:
        async with self.db.session() as session, session.begin():
            count = await session.scalar(
                select(func.count()).select_from(VectorStore).where(_owned(VectorStore, account))
            )
            if (count or 0) >= MAX_STORES:
                raise APIError(
                    400,
                    f"An account may have at most {MAX_STORES} vector stores.",
                    code="too_many_vector_stores",
                )
            now = datetime.now(UTC)
            store = VectorStore(
                id=new_id("vs_"),
                account_id=account,
                name=name,
                metadata_json=orjson.dumps(metadata).decode() if metadata else None,
                created_at=now,
                last_active_at=now,
            )
            session.add(store)
        return store

    async def get(self, account: str | None, store_id: str) -> VectorStore:
        async with self.db.session() as session:
            row = await session.scalar(
                select(VectorStore).where(VectorStore.id == store_id, _owned(VectorStore, account))
            )
        if row is None:
            raise not_found("vector store", store_id)
        return row

    async def stores(self, account: str | None) -> list[VectorStore]:
        query = (
            select(VectorStore).where(_owned(VectorStore, account)).order_by(VectorStore.created_at.desc())
        )
        async with self.db.session() as session:
            return list((await session.scalars(query)).all())

    async def delete(self, account: str | None, store_id: str) -> None:
        await self.get(account, store_id)
        async with self.db.session() as session, session.begin():
            await session.execute(text("DELETE FROM file_chunks WHERE vector_store_id = :s"), {"s": store_id})
            await session.execute(delete(VectorStoreFile).where(VectorStoreFile.vector_store_id == store_id))
            await session.execute(delete(VectorStore).where(VectorStore.id == store_id))

    async def file_counts(self, store_id: str) -> dict[str, int]:
        query = (
            select(
                VectorStoreFile.status, func.count(), func.coalesce(func.sum(VectorStoreFile.usage_bytes), 0)
            )
            .where(VectorStoreFile.vector_store_id == store_id)
            .group_by(VectorStoreFile.status)
        )
        async with self.db.session() as session:
            rows = (await session.execute(query)).all()
        counts = {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0}
        used = 0
        for status, count, size in rows:
            counts[status] = counts.get(status, 0) + int(count)
            used += int(size)
        return {**counts, "total": sum(counts.values()), "usage_bytes": used}

    # ---- files --------------------------------------------------------------------------------------

    async def add_file(
        self,
        account: str | None,
        store_id: str,
        file_id: str,
        chunks: list[str] | None,
        error: str | None,
        attributes: dict[str, Any] | None,
    ) -> VectorStoreFile:
        """The file in the store with its chunks (`chunks` None: it could not be read, `error` says why)."""
        await self.get(account, store_id)
        async with self.db.session() as session, session.begin():
            count = await session.scalar(
                select(func.count())
                .select_from(VectorStoreFile)
                .where(VectorStoreFile.vector_store_id == store_id)
            )
            if (count or 0) >= MAX_FILES:
                raise APIError(400, f"A vector store holds at most {MAX_FILES} files.", code="too_many_files")
            await session.execute(
                text("DELETE FROM file_chunks WHERE vector_store_id = :s AND file_id = :f"),
                {"s": store_id, "f": file_id},
            )
            await session.execute(
                delete(VectorStoreFile).where(
                    VectorStoreFile.vector_store_id == store_id, VectorStoreFile.file_id == file_id
                )
            )
            row = VectorStoreFile(
                vector_store_id=store_id,
                file_id=file_id,
                account_id=account,
                status="completed" if chunks is not None else "failed",
                usage_bytes=sum(len(c.encode()) for c in chunks or ()),
                last_error=error,
                attributes=orjson.dumps(attributes).decode() if attributes else None,
                created_at=datetime.now(UTC),
            )
            session.add(row)
            if chunks:
                await session.execute(
                    text(
                        "INSERT INTO file_chunks (vector_store_id, file_id, account_id, position, text) "
                        "VALUES (:s, :f, :a, :p, :t)"
                    ),
                    [
                        {"s": store_id, "f": file_id, "a": account, "p": i, "t": c}
                        for i, c in enumerate(chunks)
                    ],
                )
        return row

    async def files(self, account: str | None, store_id: str) -> list[VectorStoreFile]:
        await self.get(account, store_id)
        query = (
            select(VectorStoreFile)
            .where(VectorStoreFile.vector_store_id == store_id)
            .order_by(VectorStoreFile.created_at.desc())
        )
        async with self.db.session() as session:
            return list((await session.scalars(query)).all())

    async def file(self, account: str | None, store_id: str, file_id: str) -> VectorStoreFile:
        await self.get(account, store_id)
        async with self.db.session() as session:
            row = await session.get(VectorStoreFile, (store_id, file_id))
        if row is None:
            raise not_found("file in this vector store", file_id)
        return row

    async def remove_file(self, account: str | None, store_id: str, file_id: str) -> None:
        await self.file(account, store_id, file_id)
        async with self.db.session() as session, session.begin():
            await session.execute(
                text("DELETE FROM file_chunks WHERE vector_store_id = :s AND file_id = :f"),
                {"s": store_id, "f": file_id},
            )
            await session.execute(
                delete(VectorStoreFile).where(
                    VectorStoreFile.vector_store_id == store_id, VectorStoreFile.file_id == file_id
                )
            )

    async def forget_file(self, account: str | None, file_id: str) -> None:
        """A deleted file leaves every store of its account."""
        async with self.db.session() as session, session.begin():
            await session.execute(
                text("DELETE FROM file_chunks WHERE file_id = :f AND account_id IS NOT DISTINCT FROM :a")
                if self.db.dialect == "postgresql"
                else text("DELETE FROM file_chunks WHERE file_id = :f AND account_id IS :a"),
                {"f": file_id, "a": account},
            )
            await session.execute(
                delete(VectorStoreFile).where(
                    VectorStoreFile.file_id == file_id, _owned(VectorStoreFile, account)
                )
            )

    # ---- search -------------------------------------------------------------------------------------

    async def search(self, account: str | None, store_ids: list[str], query: str, limit: int) -> list[Hit]:
        """The chunks of these stores (each the account's own, else 404) that best match `query`."""
        for store_id in store_ids:
            await self.get(account, store_id)
        words = _words(query)
        if not words or not store_ids:
            return []
        # More rows than asked for, re-ranked here (`_score`) before the cut.
        params: dict[str, Any] = {"limit": limit * 4, **{f"s{i}": s for i, s in enumerate(store_ids)}}
        stores = ", ".join(f":s{i}" for i in range(len(store_ids)))
        if self.db.dialect == "postgresql":
            params["q"] = " | ".join(words)
            sql = (
                "SELECT c.file_id, c.text, ts_rank_cd(c.tsv, q) AS rank, f.attributes "
                "FROM file_chunks c, to_tsquery('english', :q) q, vector_store_files f "
                f"WHERE c.tsv @@ q AND c.vector_store_id IN ({stores}) "
                "AND f.vector_store_id = c.vector_store_id AND f.file_id = c.file_id "
                "ORDER BY rank DESC, c.id LIMIT :limit"
            )
        else:
            # Each word quoted: FTS5's query syntax (AND, NEAR, column filters) stays out of users' hands.
            params["q"] = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
            sql = (
                "SELECT c.file_id, c.text, -bm25(file_chunks_fts) AS rank, f.attributes "
                "FROM file_chunks_fts JOIN file_chunks c ON c.id = file_chunks_fts.rowid "
                "JOIN vector_store_files f "
                "ON f.vector_store_id = c.vector_store_id AND f.file_id = c.file_id "
                f"WHERE file_chunks_fts MATCH :q AND c.vector_store_id IN ({stores}) "
                "ORDER BY rank DESC, c.id LIMIT :limit"
            )
        async with self.db.session() as session:
            rows = (await session.execute(text(sql), params)).all()
            await session.execute(
                text(f"UPDATE vector_stores SET last_active_at = :now WHERE id IN ({stores})"),
                {**params, "now": datetime.now(UTC)},
            )
            await session.commit()
        hits = []
        for file_id, chunk, rank, attributes in rows:
            score = _score(words, chunk, max(float(rank), 0.0))
            hits.append(
                Hit(
                    file_id,
                    chunk,
                    score,
                    orjson.loads(attributes) if attributes else {},
                )
            )
        hits.sort(key=lambda hit: -hit.score)  # stable: the database's order among equals
        return hits[:limit]


def _score(words: list[str], chunk: str, rank: float) -> float:
    """A hit's score in [0, 1): half the share of the query's words it holds (each word's first five
    letters, a crude stem, so "returned" holds "return"), half the database's rank mapped by s / (1 + s).
    BM25's idf is 0 for a word in half the chunks, so in a small store the rank alone says little."""
    lowered = chunk.lower()
    held = sum(1 for word in words if word[:5] in lowered)
    return round(0.5 * held / len(words) + 0.5 * rank / (1 + rank), 4)


def chunks_of(text_: str, size: int = 2000, overlap: int = 400) -> list[str]:
    """The text cut into overlapping windows of about `size` characters (some 500 tokens), each ending at a
    paragraph, sentence or word boundary where one is near, so a passage is found whole in some chunk."""
    text_ = text_.strip()
    if not text_:
        return []
    out: list[str] = []
    start = 0
    while start < len(text_):
        end = min(start + size, len(text_))
        if end < len(text_):
            window = text_[start:end]
            for mark in ("\n\n", ". ", "\n", " "):
                cut = window.rfind(mark, size // 2)
                if cut > 0:
                    end = start + cut + len(mark)
                    break
        out.append(text_[start:end].strip())
        if end >= len(text_):
            break
        start = max(end - overlap, start + 1)
        while start < end and not text_[start - 1].isspace():  # begin at a word
            start += 1
    return [c for c in out if c]
