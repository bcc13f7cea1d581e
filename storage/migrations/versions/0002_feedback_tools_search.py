"""Feedback and tool calls on messages; full-text search (SQLite FTS5, PostgreSQL tsvector + GIN).

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# How much of a message PostgreSQL indexes: a tsvector is capped at 1 MB, and a pasted file
# longer than this is still found by its opening.
PG_CONTENT_CHARS = 100_000
PG_REASONING_CHARS = 20_000

# SQLite: a contentless FTS5 table whose rowid is message.rowid. The owner is indexed as one
# token ("o" + hex of the owner) so a search reads only that owner's postings. Triggers keep it in
# step; deleting from a contentless table needs the old values, which the message row still has.
SQLITE_FTS = [
    """CREATE VIRTUAL TABLE message_fts USING fts5(
        owner_key, content, reasoning, content='', tokenize='unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER message_fts_insert AFTER INSERT ON message BEGIN
        INSERT INTO message_fts(rowid, owner_key, content, reasoning)
        VALUES (new.rowid, 'o' || hex(new.owner), new.content, coalesce(new.reasoning, ''));
    END""",
    """CREATE TRIGGER message_fts_delete AFTER DELETE ON message BEGIN
        INSERT INTO message_fts(message_fts, rowid, owner_key, content, reasoning)
        VALUES ('delete', old.rowid, 'o' || hex(old.owner), old.content, coalesce(old.reasoning, ''));
    END""",
    """CREATE TRIGGER message_fts_update AFTER UPDATE OF owner, content, reasoning ON message BEGIN
        INSERT INTO message_fts(message_fts, rowid, owner_key, content, reasoning)
        VALUES ('delete', old.rowid, 'o' || hex(old.owner), old.content, coalesce(old.reasoning, ''));
        INSERT INTO message_fts(rowid, owner_key, content, reasoning)
        VALUES (new.rowid, 'o' || hex(new.owner), new.content, coalesce(new.reasoning, ''));
    END""",
    # Rows written by revision 0001.
    """INSERT INTO message_fts(rowid, owner_key, content, reasoning)
        SELECT rowid, 'o' || hex(owner), content, coalesce(reasoning, '') FROM message""",
]

# PostgreSQL's parser reads "<...>" as an HTML tag (and drops text inside <script>), and keeps
# "example.com", "a/b" or "x@y.org" as single tokens; turning these characters into spaces indexes
# plain words, as SQLite's unicode61 tokenizer does. storage/search.py applies the same mapping
# (PG_SEPARATORS) to the query text, so the two sides always agree.
PG_SEPARATORS = "<>/@.:"
PG_SEARCH = [
    f"""ALTER TABLE message ADD COLUMN search tsvector GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig, translate(
            left(content, {PG_CONTENT_CHARS}) || ' ' || left(coalesce(reasoning, ''), {PG_REASONING_CHARS}),
            '{PG_SEPARATORS}', '{" " * len(PG_SEPARATORS)}'))
    ) STORED""",
    "CREATE INDEX ix_message_search ON message USING gin (search)",
]


def upgrade() -> None:
    op.add_column("message", sa.Column("feedback", sa.String(8), nullable=True))
    op.add_column("message", sa.Column("tool_calls", sa.JSON(), nullable=True))
    dialect = op.get_bind().dialect.name
    statements = {"sqlite": SQLITE_FTS, "postgresql": PG_SEARCH}.get(dialect, [])
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("message_fts_insert", "message_fts_delete", "message_fts_update"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS message_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_message_search")
        op.execute("ALTER TABLE message DROP COLUMN IF EXISTS search")
    with op.batch_alter_table("message") as batch:
        batch.drop_column("tool_calls")
        batch.drop_column("feedback")
