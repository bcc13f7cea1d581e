"""Attachments: files of user messages, deduplicated per owner by content hash.

Revision ID: 0006
Revises: 0005
Create Date: 2026-01-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "attachment",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("mime", sa.String(100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        # SQLite BLOB / PostgreSQL bytea: the bytes live with the rows that name them.
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("owner", "sha256", name="uq_attachment_owner_sha256"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Images and PDFs are compressed already: store them out of line without another (wasted)
        # pglz pass over every byte on each write.
        op.execute("ALTER TABLE attachment ALTER COLUMN data SET STORAGE EXTERNAL")
    op.create_table(
        "message_attachment",
        sa.Column(
            "message_id",
            sa.Uuid(),
            sa.ForeignKey("message.id", ondelete="CASCADE", name="fk_message_attachment_message"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer(), primary_key=True),
        # No ON DELETE: deleting an attachment that a message still links is refused by the database.
        sa.Column(
            "attachment_id",
            sa.Uuid(),
            sa.ForeignKey("attachment.id", name="fk_message_attachment_attachment"),
            nullable=False,
        ),
        sa.Column("name", sa.String(200), nullable=False),
    )
    # The "is it still linked?" check of every clean-up, and the foreign key's own check.
    op.create_index("ix_message_attachment_attachment_id", "message_attachment", ["attachment_id"])
    # Plain ADD COLUMN with a constant default: no table copy on SQLite (which would fire the
    # full-text triggers for every row), no rewrite on PostgreSQL 11+. Old messages have no files.
    op.add_column("message", sa.Column("attachment_count", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.execute("ALTER TABLE message DROP COLUMN attachment_count")
    op.drop_index("ix_message_attachment_attachment_id", table_name="message_attachment")
    op.drop_table("message_attachment")
    op.drop_table("attachment")
