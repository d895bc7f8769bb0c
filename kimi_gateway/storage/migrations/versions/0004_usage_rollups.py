"""usage rolled up per hour and day; endpoint uptime per five minutes

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    counts = [
        sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")
        for name in (
            "requests",
            "errors",
            "prompt_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "completion_tokens",
            "cost_nano",
        )
    ]
    histogram = [sa.Column(f"lat_{i}", sa.BigInteger(), nullable=False, server_default="0") for i in range(8)]
    op.create_table(
        "usage_buckets",
        sa.Column("granularity", sa.String(length=1), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("provider", sa.String(length=200), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("app", sa.String(length=500), nullable=False),
        sa.Column("app_title", sa.String(length=200), nullable=False, server_default=""),
        *counts,
        sa.Column("latency_ms_x100_sum", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("ttft_ms_x100_sum", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("ttft_count", sa.BigInteger(), nullable=False, server_default="0"),
        *histogram,
        sa.PrimaryKeyConstraint("granularity", "start", "model", "provider", "account_id", "key_hash", "app"),
    )
    op.create_index("ix_usage_buckets_model", "usage_buckets", ["granularity", "model", "start"])
    op.create_table(
        "uptime_buckets",
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("provider", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("successes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("errors", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("rate_limited", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("start", "provider", "model"),
    )


def downgrade() -> None:
    op.drop_table("uptime_buckets")
    op.drop_index("ix_usage_buckets_model", table_name="usage_buckets")
    op.drop_table("usage_buckets")
