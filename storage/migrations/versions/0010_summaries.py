"""Context summaries: a stored summary of a conversation's older messages, keyed by the last message it covers.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new table only: nothing existing is rebuilt (0008's note on SQLite batch mode).
    op.create_table(
        "context_summary",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("conversation_id", sa.Uuid(),
                  sa.ForeignKey("conversation.id", ondelete="CASCADE", name="fk_context_summary_conversation"),
                  nullable=False),
        # The last message the summary covers: a path through it has the same older part, another branch
        # does not. Deleting that message (its branch) deletes the summary with it, in the same statement.
        sa.Column("covers_message_id", sa.Uuid(),
                  sa.ForeignKey("message.id", ondelete="CASCADE", name="fk_context_summary_message"), nullable=False),
        sa.Column("covered", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("provider", sa.String(255), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_context_summary_conversation", "context_summary", ["conversation_id", "covers_message_id"])
    op.create_index("ix_context_summary_covers", "context_summary", ["covers_message_id"])


def downgrade() -> None:
    op.drop_index("ix_context_summary_covers", table_name="context_summary")
    op.drop_index("ix_context_summary_conversation", table_name="context_summary")
    op.drop_table("context_summary")
