"""a tool loop's model calls tied to their request, each with its server-side tool calls and their cost

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("request_id", sa.String(length=80), nullable=True))
        batch.add_column(sa.Column("tool_calls", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("tool_cost", sa.Numeric(20, 9), nullable=False, server_default="0"))
    op.create_index("ix_generations_request", "generations", ["request_id"])


def downgrade() -> None:
    op.drop_index("ix_generations_request", table_name="generations")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("tool_cost")
        batch.drop_column("tool_calls")
        batch.drop_column("request_id")
