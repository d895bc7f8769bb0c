"""What an account keeps on the gateway: its files and its stored responses, under one storage quota."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from kimi_gateway.storage.models import StoredFile, StoredResponse


async def stored_bytes(session: AsyncSession, account_id: str | None) -> int:
    """Bytes of the account's files and stored responses, together."""
    files = select(func.coalesce(func.sum(StoredFile.bytes), 0)).where(
        StoredFile.account_id.is_(None) if account_id is None else StoredFile.account_id == account_id
    )
    responses = select(func.coalesce(func.sum(StoredResponse.size), 0)).where(
        StoredResponse.account_id.is_(None)
        if account_id is None
        else StoredResponse.account_id == account_id,
        # Expired rows wait for the next purge: gone for their owner, and for the quota.
        StoredResponse.expires_at > datetime.now(UTC),
    )
    total = await session.scalar(select(files.scalar_subquery() + responses.scalar_subquery()))
    return int(total or 0)
