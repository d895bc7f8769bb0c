"""an account's generations newest first (the console's generation log)

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_generations_account_created", "generations", ["account_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_generations_account_created", table_name="generations")
