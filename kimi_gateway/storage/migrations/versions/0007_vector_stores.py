"""vector stores: stores, their files, and the files' chunks with the database's own full-text index

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vector_stores",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("account_id", sa.String(length=40), nullable=True, index=True),
        sa.Column("name", sa.String(length=256), nullable=False, server_default=""),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("last_active_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "vector_store_files",
        sa.Column("vector_store_id", sa.String(length=40), primary_key=True),
        sa.Column("file_id", sa.String(length=40), primary_key=True),
        sa.Column("account_id", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("usage_bytes", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("attributes", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_vector_store_files_file", "vector_store_files", ["file_id"])
    op.create_table(
        "file_chunks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("vector_store_id", sa.String(length=40), nullable=False),
        sa.Column("file_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
    )
    op.create_index("ix_file_chunks_store_file", "file_chunks", ["vector_store_id", "file_id"])
    if op.get_bind().dialect.name == "postgresql":
        # The text's search vector, kept by the database itself, and its inverted index.
        op.execute(
            "ALTER TABLE file_chunks ADD COLUMN tsv tsvector "
            "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED"
        )
        op.execute("CREATE INDEX ix_file_chunks_tsv ON file_chunks USING GIN (tsv)")
    else:
        # SQLite's FTS5, over the chunks table's own rows (an external-content index), kept by triggers.
        op.execute(
            "CREATE VIRTUAL TABLE file_chunks_fts USING fts5("
            "text, content='file_chunks', content_rowid='id', tokenize='porter unicode61')"
        )
        op.execute(
            "CREATE TRIGGER file_chunks_ai AFTER INSERT ON file_chunks BEGIN "
            "INSERT INTO file_chunks_fts(rowid, text) VALUES (new.id, new.text); END"
        )
        op.execute(
            "CREATE TRIGGER file_chunks_ad AFTER DELETE ON file_chunks BEGIN "
            "INSERT INTO file_chunks_fts(file_chunks_fts, rowid, text) "
            "VALUES ('delete', old.id, old.text); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP TRIGGER IF EXISTS file_chunks_ad")
        op.execute("DROP TRIGGER IF EXISTS file_chunks_ai")
        op.execute("DROP TABLE IF EXISTS file_chunks_fts")
    op.drop_index("ix_file_chunks_store_file", table_name="file_chunks")
    op.drop_table("file_chunks")
    op.drop_index("ix_vector_store_files_file", table_name="vector_store_files")
    op.drop_table("vector_store_files")
    op.drop_table("vector_stores")
