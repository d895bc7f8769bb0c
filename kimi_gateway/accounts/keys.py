"""API keys: `sk-kg-<random>`, kept only as a SHA-256 hash and a display prefix, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import func, select, update

from kimi_gateway.accounts.cache import RefreshingCache
from kimi_gateway.accounts.changes import KEY, Changes
from kimi_gateway.storage import Database
from kimi_gateway.storage.models import Account, ApiKey

PREFIX = "sk-kg-"
INFERENCE, MANAGEMENT = "inference", "management"
KINDS = (INFERENCE, MANAGEMENT)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    hash: str
    prefix: str
    account_id: str
    name: str
    kind: str
    credit_limit: Decimal | None
    rpm: int | None
    expires_at: datetime | None
    disabled: bool
    created_at: datetime | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyRecord:
        return cls(
            row.hash,
            row.prefix,
            row.account_id,
            row.name,
            row.kind,
            row.credit_limit,
            row.rpm,
            row.expires_at,
            row.disabled,
            row.created_at,
        )

    def usable(self, now: datetime) -> bool:
        expires = self.expires_at
        if expires is not None and expires.tzinfo is None:  # SQLite hands back naive datetimes
            expires = expires.replace(tzinfo=UTC)
        return not self.disabled and (expires is None or expires > now)

    def public(self) -> dict[str, object]:
        return {
            "hash": self.hash,
            "label": self.prefix,
            "name": self.name,
            "kind": self.kind,
            "account_id": self.account_id,
            "limit": float(self.credit_limit) if self.credit_limit is not None else None,
            "rate_limit_rpm": self.rpm,
            "disabled": self.disabled,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


class KeyStore:
    """Keys in the database, with a short in-process cache so a request costs no query.

    A change made through this process (disable, update, create) applies here at once and is published to
    the other replicas (`Changes`); one made elsewhere without telling is seen within `cache_seconds`.
    """

    def __init__(
        self,
        db: Database,
        changes: Changes | None = None,
        cache_seconds: float = 5.0,
        cache_grace_seconds: float = 30.0,
    ) -> None:
        self.db = db
        self.changes = changes or Changes(None, "")
        self._cache: RefreshingCache[str, KeyRecord | None] = RefreshingCache(
            self.get, cache_seconds, stale_grace=cache_grace_seconds
        )
        # Once a key exists, auth stays on for good; until then, one shared count per cache period.
        self._some_key = False
        self._count: RefreshingCache[None, bool] = RefreshingCache(
            self._any_in_db, cache_seconds, stale_grace=0.0
        )

    def forget(self, hash_: str | None) -> None:
        """A key changed elsewhere (None: any key may have): the next use reads it afresh."""
        if hash_ is None:
            self._cache.clear()
        else:
            self._cache.drop(hash_)
        self._count.clear()

    async def create(
        self,
        *,
        name: str,
        kind: str = INFERENCE,
        account_id: str | None = None,
        credit_limit: Decimal | None = None,
        rpm: int | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[str, KeyRecord]:
        """The plaintext key (shown this once) and its record; a new account is made if none is named."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        key = new_key()
        async with self.db.session() as session, session.begin():
            if account_id is None:
                account_id = "acct_" + secrets.token_hex(8)
                session.add(Account(id=account_id, name=name))
            elif await session.get(Account, account_id) is None:
                session.add(Account(id=account_id, name=account_id))
            row = ApiKey(
                hash=key_hash(key),
                prefix=key[:10] + "...",
                account_id=account_id,
                name=name,
                kind=kind,
                credit_limit=credit_limit,
                rpm=rpm,
                expires_at=expires_at,
                disabled=False,
            )
            session.add(row)
        self._some_key = True
        await self.changes.publish(KEY, row.hash)
        async with self.db.session() as session:
            stored = await session.get(ApiKey, row.hash)
            assert stored is not None
            return key, KeyRecord.of(stored)

    async def list(self, account_id: str | None = None) -> list[KeyRecord]:
        query = select(ApiKey).order_by(ApiKey.created_at)
        if account_id is not None:
            query = query.where(ApiKey.account_id == account_id)
        async with self.db.session() as session:
            return [KeyRecord.of(row) for row in (await session.scalars(query)).all()]

    async def get(self, hash_: str) -> KeyRecord | None:
        async with self.db.session() as session:
            row = await session.get(ApiKey, hash_)
            return KeyRecord.of(row) if row else None

    async def set_disabled(self, hash_: str, disabled: bool) -> bool:
        async with self.db.session() as session, session.begin():
            result = await session.execute(
                update(ApiKey).where(ApiKey.hash == hash_).values(disabled=disabled)
            )
        self._cache.drop(hash_)
        await self.changes.publish(KEY, hash_)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def update(self, hash_: str, **fields: object) -> KeyRecord | None:
        async with self.db.session() as session, session.begin():
            row = await session.get(ApiKey, hash_)
            if row is None:
                return None
            for name, value in fields.items():
                setattr(row, name, value)
        self._cache.drop(hash_)
        await self.changes.publish(KEY, hash_)
        return await self.get(hash_)

    async def any_keys(self) -> bool:
        """Whether any key exists: with none, a loopback-only gateway runs without auth."""
        if not self._some_key:
            self._some_key = await self._count.get(None)
        return self._some_key

    async def _any_in_db(self, _: None) -> bool:
        async with self.db.session() as session:
            return bool(await session.scalar(select(func.count()).select_from(ApiKey)))

    async def authenticate(self, presented: str) -> KeyRecord | None:
        digest = key_hash(presented)
        record = await self._cache.get(digest)
        # The lookup is by hash; the final comparison does not stop at the first differing byte.
        if record is None or not hmac.compare_digest(record.hash, digest):
            return None
        if record.disabled or (record.expires_at is not None and not record.usable(datetime.now(UTC))):
            return None
        return record
