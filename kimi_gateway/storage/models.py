"""The schema: accounts, API keys, the credit ledger, generation records, rate-limit tiers, files and
stored responses."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    false,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# USD with nine decimal places: per-token prices are fractions of a micro-dollar.
Money = Numeric(20, 9)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiKey(Base):
    __tablename__ = "api_keys"

    # Only the SHA-256 of a key is kept; the key itself is shown once, at creation.
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(32))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # "inference" or "management"
    credit_limit: Mapped[Decimal | None] = mapped_column(Money, nullable=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LedgerEntry(Base):
    """Append-only: recharges and vouchers add, charges subtract; balances are sums over it."""

    __tablename__ = "ledger_entries"

    # Idempotency: a charge's id is derived from its generation, so writing it twice cannot count twice.
    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(16))  # "recharge", "voucher", "charge"
    amount: Mapped[Decimal] = mapped_column(Money)
    key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reference: Mapped[str | None] = mapped_column(String(80), nullable=True)
    note: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_ledger_account_kind", "account_id", "kind"),)


class GenerationRecord(Base):
    """One row per model call: what served it, what it used, what it cost. A request is one row, or (a tool
    loop) one per model call, all naming the request's id (the first call's, which the response gave)."""

    __tablename__ = "generations"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String(40), index=True, nullable=True)
    key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(32))
    finish_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    streamed: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    latency_ms: Mapped[float | None] = mapped_column(Numeric(12, 2), nullable=True)
    ttft_ms: Mapped[float | None] = mapped_column(Numeric(12, 2), nullable=True)
    app_referer: Mapped[str | None] = mapped_column(String(500), nullable=True)
    app_title: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    request_id: Mapped[str | None] = mapped_column(String(80), nullable=True, index=True)  # a tool loop's
    tool_calls: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # server-side tools run
    tool_cost: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), server_default="0")  # in cost

    __table_args__ = (Index("ix_generations_account_created", "account_id", "created_at"),)


class Tier(Base):
    __tablename__ = "tiers"

    tier: Mapped[int] = mapped_column(Integer, primary_key=True)
    min_recharge: Mapped[Decimal] = mapped_column(Money)
    concurrency: Mapped[int] = mapped_column(Integer)
    rpm: Mapped[int] = mapped_column(Integer)


class StoredFile(Base):
    """A file uploaded through /v1/files: its bytes and extracted text live under data_dir/files/."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String(40), index=True, nullable=True)
    filename: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # "ok" or "error"
    status_details: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class VectorStore(Base):
    """A vector store (OpenAI's name): a searchable set of an account's files (storage/vector_stores.py)."""

    __tablename__ = "vector_stores"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String(40), index=True, nullable=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    metadata_json: Mapped[str | None] = mapped_column("metadata", Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_active_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class VectorStoreFile(Base):
    __tablename__ = "vector_store_files"

    vector_store_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(40), primary_key=True, index=True)
    account_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # completed or failed
    usage_bytes: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500), nullable=True)
    attributes: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class StoredResponse(Base):
    """A response made through /v1/responses with `store`, kept for `previous_response_id` and GET, owned by
    its account like a file, until it expires."""

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String(40), index=True, nullable=True)
    response: Mapped[str] = mapped_column(Text)  # the response object, as JSON
    input_items: Mapped[str] = mapped_column(Text)  # this request's input items, as JSON
    # Rows from before chains (migration 0006): the whole conversation in chat form, its answer included.
    # Empty in newer rows, which hold their `turn` and the id of the response they continue.
    context: Mapped[str] = mapped_column(Text)
    turn: Mapped[str | None] = mapped_column(Text, nullable=True)  # the messages it added, and its answer
    parent_id: Mapped[str | None] = mapped_column(String(80), index=True, nullable=True)
    size: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # bytes, for the quota
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # deleted, continued
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class UsageBucket(Base):
    """Usage rolled up per hour (`h`, kept 48 hours) and per UTC day (`d`, kept 400 days), per model,
    provider, account, key and app. Written with the generation records of each batch, in the same
    transaction, by adding to the bucket's figures (stats/rollups.py); rebuilt from those records on demand.

    Parts of the key that a request lacks are '' rather than NULL: NULLs never conflict, and an upsert
    needs the key to match."""

    __tablename__ = "usage_buckets"

    granularity: Mapped[str] = mapped_column(String(1), primary_key=True)
    start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    provider: Mapped[str] = mapped_column(String(200), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    app: Mapped[str] = mapped_column(String(500), primary_key=True)  # the normalized HTTP-Referer, or ''
    app_title: Mapped[str] = mapped_column(String(200), default="")
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_nano: Mapped[int] = mapped_column(BigInteger, default=0)  # exact: sums agree with the ledger
    # Sums in hundredths of a millisecond (the records' precision), as integers: exact in any order.
    latency_ms_x100_sum: Mapped[int] = mapped_column(BigInteger, default=0)
    ttft_ms_x100_sum: Mapped[int] = mapped_column(BigInteger, default=0)
    ttft_count: Mapped[int] = mapped_column(BigInteger, default=0)
    # Latency histogram (bounds in stats/rollups.py): counts add up across replicas, and give a p50.
    lat_0: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_1: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_2: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_3: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_4: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_5: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_6: Mapped[int] = mapped_column(BigInteger, default=0)
    lat_7: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index("ix_usage_buckets_model", "granularity", "model", "start"),)


class UptimeBucket(Base):
    """Per endpoint (provider x model), five minutes of outcomes: successes, errors, rate-limited."""

    __tablename__ = "uptime_buckets"

    start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    provider: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    successes: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    rate_limited: Mapped[int] = mapped_column(BigInteger, default=0)


class AgentRunRecord(Base):
    """A finished swarm run's tree (core/swarm.py), for GET /api/v1/agents/runs/{id} on any replica."""

    __tablename__ = "agent_runs"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String(40), index=True, nullable=True)
    request_id: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(32))
    tree: Mapped[str] = mapped_column(Text)  # the run's tree, as JSON
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
