"""Message tree: each message has a parent, each conversation a current leaf; whole-tree share links.

Every existing conversation is linear, so each message's parent is the message just before it, and
the current leaf is the newest message: what each conversation showed before, it shows after.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-09
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Portable correlated subqueries (SQLite 3.40, PostgreSQL 15); the unique (conversation_id,
# position) index answers each one with a single index probe.
SET_PARENTS = """
UPDATE message SET parent_id = (
    SELECT earlier.id FROM message AS earlier
    WHERE earlier.conversation_id = message.conversation_id AND earlier.position < message.position
    ORDER BY earlier.position DESC LIMIT 1)
"""
SET_LEAVES = """
UPDATE conversation SET current_leaf_id = (
    SELECT newest.id FROM message AS newest
    WHERE newest.conversation_id = conversation.id
    ORDER BY newest.position DESC LIMIT 1)
"""


# The parent's foreign key has no ON DELETE CASCADE, on purpose: a cascade along parent links recurses
# once per generation, and SQLite stops at 1,000 levels ("too many levels of trigger recursion"), so a
# chat of over 1,000 messages could not be deleted. Every delete takes a message with all its
# descendants in one statement (a conversation, truncate_after's suffix, storage.tree.delete_branch),
# which the default NO ACTION check, run at the end of the statement, accepts.


def upgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    # A SQLite database downgraded from this revision kept the column (see downgrade).
    if "parent_id" not in {c["name"] for c in sa.inspect(bind).get_columns("message")}:
        if sqlite:
            # Plain ADD COLUMN, never batch mode: rebuilding `message` would drop the full-text
            # triggers of 0002, renumber the rowids the FTS table is keyed by, and (foreign keys
            # being on) cascade the drop of the old table into attachments links and compare panes.
            # SQLite accepts a REFERENCES clause here because the column's default is NULL.
            op.execute("ALTER TABLE message ADD COLUMN parent_id CHAR(32) REFERENCES message (id)")
        else:
            op.add_column("message", sa.Column("parent_id", sa.Uuid(), nullable=True))
    op.execute(SET_PARENTS)
    if not sqlite:  # after the backfill: one check of the finished column, not one per updated row
        op.create_foreign_key("fk_message_parent", "message", "message", ["parent_id"], ["id"])
    # Children of a message (the versions map, deleting a branch, the cascade's own lookups).
    op.create_index("ix_message_parent_id", "message", ["parent_id"])
    # No foreign key: see storage.models.Conversation.current_leaf_id.
    op.add_column("conversation", sa.Column("current_leaf_id", sa.Uuid(), nullable=True))
    op.execute(SET_LEAVES)
    op.add_column("share_link", sa.Column("whole_tree", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    op.execute("ALTER TABLE share_link DROP COLUMN whole_tree")
    op.execute("ALTER TABLE conversation DROP COLUMN current_leaf_id")
    op.drop_index("ix_message_parent_id", table_name="message")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot drop a column named by a foreign key without copying the table, and that
        # copy would lose data (see upgrade). The column stays, empty, and unused by 0007's code;
        # upgrading again reuses it. Alternative versions are flattened: only the links go.
        op.execute("UPDATE message SET parent_id = NULL")
        return
    op.drop_constraint("fk_message_parent", "message", type_="foreignkey")
    op.drop_column("message", "parent_id")
