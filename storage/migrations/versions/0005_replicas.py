"""Replicas: a heartbeat per app process, and which process streams each pending reply.

Revision ID: 0005
Revises: 0004
Create Date: 2025-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING_ONLY = sa.text("finish_reason = 'pending'")


def upgrade() -> None:
    op.create_table(
        "replica",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False, server_default=""),
        sa.Column("pid", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )
    # Plain ADD COLUMN (no batch copy on SQLite: rebuilding `message` would cost a full copy and
    # fire the full-text triggers). Replies pending from before have no instance: the start-up
    # sweep treats them by age alone.
    op.add_column("message", sa.Column("instance_id", sa.String(64), nullable=True))
    # Partial: only replies still streaming, so the index stays tiny and the sweep cheap.
    op.create_index(
        "ix_message_pending_instance",
        "message",
        ["instance_id"],
        sqlite_where=PENDING_ONLY,
        postgresql_where=PENDING_ONLY,
    )


def downgrade() -> None:
    op.drop_index("ix_message_pending_instance", table_name="message")
    op.execute("ALTER TABLE message DROP COLUMN instance_id")
    op.drop_table("replica")
