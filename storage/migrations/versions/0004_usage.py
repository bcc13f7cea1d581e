"""Usage contract: cached input tokens, cache-write tokens and whether the figures are estimates.

Revision ID: 0004
Revises: 0003
Create Date: 2025-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("cached_input_tokens", "cache_write_tokens", "usage_estimated")


def upgrade() -> None:
    # Nullable with no default: replies saved before keep their numbers, and NULL says "not recorded"
    # (not "no cache" and not "reported"), which is all that is known about them.
    op.add_column("message", sa.Column("cached_input_tokens", sa.Integer(), nullable=True))
    op.add_column("message", sa.Column("cache_write_tokens", sa.Integer(), nullable=True))
    op.add_column("message", sa.Column("usage_estimated", sa.Boolean(), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite before 3.35 cannot drop a column in place.
    with op.batch_alter_table("message") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
