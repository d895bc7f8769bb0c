"""stored responses kept as chains: each row its own turn and its parent's id, its size for the quota

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before keep their whole `context` (no turn, no parent): they are read as chains of one.
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.add_column(sa.Column("turn", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("parent_id", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("size", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("hidden", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index(batch_op.f("ix_responses_parent_id"), ["parent_id"], unique=False)
    op.execute("UPDATE responses SET size = LENGTH(response) + LENGTH(input_items) + LENGTH(context)")


def downgrade() -> None:
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_responses_parent_id"))
        batch_op.drop_column("hidden")
        batch_op.drop_column("size")
        batch_op.drop_column("parent_id")
        batch_op.drop_column("turn")
