"""Share links: read-only links to a conversation or a comparison, stored as a hash of their token.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "share_link",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        # SHA-256 of the token, hex: a copy of the database does not hold a single working link.
        sa.Column("token_hash", sa.String(64), nullable=False),
        # Exactly one target. Deleting it deletes its links, so a link never outlives what it shows.
        sa.Column(
            "conversation_id",
            sa.Uuid(),
            sa.ForeignKey("conversation.id", ondelete="CASCADE", name="fk_share_link_conversation"),
            nullable=True,
        ),
        sa.Column(
            "comparison_id",
            sa.Uuid(),
            sa.ForeignKey("comparison.id", ondelete="CASCADE", name="fk_share_link_comparison"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("token_hash", name="uq_share_link_token_hash"),
        sa.CheckConstraint(
            "(conversation_id IS NULL) <> (comparison_id IS NULL)", name="ck_share_link_one_target"
        ),
    )
    # The owner's list of links, newest first.
    op.create_index("ix_share_link_owner_created", "share_link", ["owner", "created_at"])
    # The cascades' lookups (PostgreSQL does not index a foreign key's referencing side by itself).
    op.create_index("ix_share_link_conversation_id", "share_link", ["conversation_id"])
    op.create_index("ix_share_link_comparison_id", "share_link", ["comparison_id"])


def downgrade() -> None:
    op.drop_index("ix_share_link_comparison_id", table_name="share_link")
    op.drop_index("ix_share_link_conversation_id", table_name="share_link")
    op.drop_index("ix_share_link_owner_created", table_name="share_link")
    op.drop_table("share_link")
