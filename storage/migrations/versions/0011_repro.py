"""Reproducibility card: each reply keeps the provider's request id, the SDK version and the system prompt's hash.

Comparison panes are messages too (0003), so one set of columns covers chat replies and panes.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (("request_id", 200), ("sdk_version", 64), ("system_prompt_sha256", 16))


def upgrade() -> None:
    # Plain ADD COLUMN on both databases, never batch mode: rebuilding `message` on SQLite would drop
    # the full-text triggers of 0002 (see 0008). Older replies keep NULL: their card says "not recorded".
    for name, length in COLUMNS:
        op.add_column("message", sa.Column(name, sa.String(length), nullable=True))


def downgrade() -> None:
    for name, _length in reversed(COLUMNS):
        # SQLite 3.35+ drops a column that no index, trigger or key names, without rebuilding the table.
        op.execute(f"ALTER TABLE message DROP COLUMN {name}")
