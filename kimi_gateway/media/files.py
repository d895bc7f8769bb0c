"""Uploaded files: a row per file in the database, the bytes and the extracted text under data_dir/files/.

Every lookup is by (id, account): another account's file does not exist, as far as a caller can tell.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from kimi_gateway.config import MediaConfig
from kimi_gateway.errors import APIError
from kimi_gateway.media.documents import BadDocument, TooCostly, extract_text
from kimi_gateway.media.ocr import OCR
from kimi_gateway.media.workers import MediaPool
from kimi_gateway.storage import Database
from kimi_gateway.storage.models import Account, StoredFile
from kimi_gateway.storage.quota import stored_bytes

PURPOSES = ("file-extract", "image", "video", "assistants", "user_data")
# Files whose text is extracted at upload: Moonshot's file-extract, and OpenAI's purposes for files that
# vector stores (file search) and models read.
EXTRACTED = ("file-extract", "assistants", "user_data")


@dataclass(frozen=True, slots=True)
class FileInfo:
    id: str
    account_id: str | None
    filename: str
    purpose: str
    bytes: int
    status: str
    status_details: str
    created_at: int

    @classmethod
    def of(cls, row: StoredFile) -> FileInfo:
        return cls(
            row.id,
            row.account_id,
            row.filename,
            row.purpose,
            row.bytes,
            row.status,
            row.status_details,
            int(row.created_at.timestamp()),
        )

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": self.status,
            "status_details": self.status_details,
        }


def file_too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"File size is too large, max file size is {limit // (1024 * 1024)}MB, please confirm and "
        "re-upload the file",
        param="file",
        code="file_too_large",
    )


def _not_found(file_id: str) -> APIError:
    return APIError(
        404, f"File '{file_id}' not found.", type="resource_not_found_error", code="file_not_found"
    )


class FileStore:
    def __init__(self, db: Database, folder: Path, config: MediaConfig, ocr: OCR, pool: MediaPool) -> None:
        self.db = db
        self.folder = folder
        self.config = config
        self.ocr = ocr
        self.pool = pool
        self._locks: dict[str | None, asyncio.Lock] = {}

    def _paths(self, file_id: str) -> tuple[Path, Path]:
        return self.folder / file_id, self.folder / f"{file_id}.txt"

    async def add(self, account_id: str | None, filename: str, purpose: str, data: bytes) -> FileInfo:
        if purpose not in PURPOSES:
            raise APIError(
                400,
                "Invalid purpose: only 'file-extract', 'assistants', 'user_data', 'image' or 'video' are "
                "accepted",
                param="purpose",
            )
        if not data:
            raise APIError(
                400,
                "File size is zero, please confirm and re-upload the file",
                param="file",
                code="empty_file",
            )
        if len(data) > self.config.max_file_bytes:
            raise file_too_large(self.config.max_file_bytes)
        file_id = "file-" + secrets.token_hex(12)
        await self._reserve(account_id, file_id, filename, purpose, len(data))
        try:
            status, details, text = "ok", "", ""
            if purpose in EXTRACTED:
                try:
                    text = await self.pool.document(
                        account_id, lambda own: extract_text(data, self.ocr, budget=own), None
                    )
                except TooCostly as why:
                    raise APIError(400, f"file: {why}.", param="file", code="file_too_costly") from None
                except BadDocument as why:
                    status, details = "error", f"Failed to extract file: {why}"
            # Written to the end even if the client goes meanwhile: a file half-written while the claim is
            # undone would stay on disk, counted by no quota.
            written = asyncio.ensure_future(asyncio.to_thread(self._write, file_id, data, text))
            try:
                await asyncio.shield(written)
            except asyncio.CancelledError:
                await asyncio.wait((written,))
                raise
            async with self.db.session() as session, session.begin():
                row = await session.get(StoredFile, file_id)
                assert row is not None
                row.status, row.status_details = status, details
        except BaseException:
            await self._unreserve(file_id)
            raise
        return await self.get(account_id, file_id)

    def _write(self, file_id: str, data: bytes, text: str) -> None:
        raw_path, text_path = self._paths(file_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        raw_path.write_bytes(data)
        text_path.write_text(text)

    async def _reserve(
        self, account_id: str | None, file_id: str, filename: str, purpose: str, size: int
    ) -> None:
        """Check the account's quotas and claim this file's share in one step, before any extraction: a
        burst of concurrent uploads cannot all pass the same check. The row is the claim ("processing");
        on PostgreSQL the account's row is locked for the check, so replicas take turns too."""
        lock = self._locks.setdefault(account_id, asyncio.Lock())
        async with lock, self.db.session() as session, session.begin():
            if account_id is not None and self.db.dialect == "postgresql":
                await session.execute(select(Account.id).where(Account.id == account_id).with_for_update())
            count = await self._count(account_id, session)
            total = await stored_bytes(session, account_id)  # its stored responses count too
            if count >= self.config.max_files:
                raise APIError(
                    400,
                    f"The number of files you have uploaded exceeded the max file count "
                    f"{self.config.max_files}, please delete previous uploaded files",
                    code="file_limit_exceeded",
                )
            if total + size > self.config.max_total_bytes:
                raise APIError(
                    400,
                    "Your files and stored responses exceed the total storage quota; please delete "
                    "previous uploaded files or stored responses",
                    code="storage_quota_exceeded",
                )
            session.add(
                StoredFile(
                    id=file_id,
                    account_id=account_id,
                    filename=filename[:500],
                    purpose=purpose,
                    bytes=size,
                    status="processing",
                    status_details="",
                )
            )

    async def _unreserve(self, file_id: str) -> None:
        async with self.db.session() as session, session.begin():
            row = await session.get(StoredFile, file_id)
            if row is not None:
                await session.delete(row)
        for path in self._paths(file_id):
            path.unlink(missing_ok=True)

    @staticmethod
    async def _count(account_id: str | None, session: AsyncSession) -> int:
        query = select(func.count()).where(
            StoredFile.account_id.is_(None) if account_id is None else StoredFile.account_id == account_id
        )
        return int(await session.scalar(query) or 0)

    async def _row(self, account_id: str | None, file_id: str) -> StoredFile:
        async with self.db.session() as session:
            row = await session.get(StoredFile, file_id)
        if row is None or row.account_id != account_id or row.status == "processing":
            raise _not_found(file_id)  # another account's, or still being read: not there yet
        return row

    async def get(self, account_id: str | None, file_id: str) -> FileInfo:
        return FileInfo.of(await self._row(account_id, file_id))

    async def list(self, account_id: str | None) -> list[FileInfo]:
        query = select(StoredFile).order_by(StoredFile.created_at)
        query = query.where(
            StoredFile.account_id.is_(None) if account_id is None else StoredFile.account_id == account_id
        )
        async with self.db.session() as session:
            return [FileInfo.of(row) for row in (await session.scalars(query)).all()]

    async def text(self, account_id: str | None, file_id: str) -> tuple[FileInfo, str]:
        info = await self.get(account_id, file_id)
        return info, await asyncio.to_thread(self._paths(file_id)[1].read_text)

    async def content(self, account_id: str | None, file_id: str) -> tuple[FileInfo, str, bytes]:
        """Description, extracted text, and the file's first bytes (enough to tell its type)."""
        info, text = await self.text(account_id, file_id)
        return info, text, await asyncio.to_thread(_head, self._paths(file_id)[0])

    async def data(self, account_id: str | None, file_id: str) -> tuple[FileInfo, bytes]:
        info = await self.get(account_id, file_id)
        return info, await asyncio.to_thread(self._paths(file_id)[0].read_bytes)

    async def delete(self, account_id: str | None, file_id: str) -> None:
        row = await self._row(account_id, file_id)
        async with self.db.session() as session, session.begin():
            await session.delete(await session.merge(row))
        for path in self._paths(file_id):
            path.unlink(missing_ok=True)


def _head(path: Path, size: int = 16) -> bytes:
    with path.open("rb") as file:
        return file.read(size)
