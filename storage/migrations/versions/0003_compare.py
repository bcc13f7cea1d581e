"""Compare mode: conversation.kind, comparison, comparison_pane, comparison_vote.

Revision ID: 0003
Revises: 0002
Create Date: 2025-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_LIST_INDEX = ["owner", "archived", "pinned", "updated_at", "id"]
NEW_LIST_INDEX = ["owner", "kind", "archived", "pinned", "updated_at", "id"]


def upgrade() -> None:
    # Every existing conversation is a chat; the server default fills them in.
    op.add_column(
        "conversation", sa.Column("kind", sa.String(16), nullable=False, server_default=sa.text("'chat'"))
    )
    # The sidebar list now filters on kind too: keep it an index-only range scan.
    op.drop_index("ix_conversation_owner_list", table_name="conversation")
    op.create_index("ix_conversation_owner_list", "conversation", NEW_LIST_INDEX)

    op.create_table(
        "comparison",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("blind", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_comparison_owner_created", "comparison", ["owner", "created_at"])
    op.create_table(
        "comparison_pane",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "comparison_id",
            sa.Uuid(),
            sa.ForeignKey("comparison.id", ondelete="CASCADE", name="fk_comparison_pane_comparison"),
            nullable=False,
        ),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column(
            "message_id",
            sa.Uuid(),
            sa.ForeignKey("message.id", ondelete="CASCADE", name="fk_comparison_pane_message"),
            nullable=False,
        ),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.UniqueConstraint("comparison_id", "slot", name="uq_comparison_pane_slot"),
    )
    op.create_index("ix_comparison_pane_message_id", "comparison_pane", ["message_id"])
    op.create_table(
        "comparison_vote",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "comparison_id",
            sa.Uuid(),
            sa.ForeignKey("comparison.id", ondelete="CASCADE", name="fk_comparison_vote_comparison"),
            nullable=False,
            unique=True,
        ),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("winner_slot", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_comparison_vote_owner", "comparison_vote", ["owner"])


def downgrade() -> None:
    op.drop_table("comparison_vote")
    op.drop_table("comparison_pane")
    op.drop_table("comparison")
    # Pane conversations have no place in a schema without compare mode.
    op.execute("DELETE FROM conversation WHERE kind <> 'chat'")
    op.drop_index("ix_conversation_owner_list", table_name="conversation")
    # Plain DROP COLUMN (SQLite >= 3.35): a batch copy of `conversation` on SQLite would drop the
    # table, and its ON DELETE CASCADE would take every message with it.
    op.execute("ALTER TABLE conversation DROP COLUMN kind")
    op.create_index("ix_conversation_owner_list", "conversation", OLD_LIST_INDEX)
