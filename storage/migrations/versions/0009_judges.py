"""Judge verdicts: LLM judges' verdicts on comparisons and batch runs, stored apart from the human votes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A new table only: nothing existing is rebuilt (0008's note on SQLite batch mode).
    op.create_table(
        "judge_verdict",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        # A verdict on a comparison goes with it; a batch run is not in the database, the row names it.
        sa.Column("comparison_id", sa.Uuid(),
                  sa.ForeignKey("comparison.id", ondelete="CASCADE", name="fk_judge_verdict_comparison"), nullable=True),
        sa.Column("slot_a", sa.Integer(), nullable=True),
        sa.Column("slot_b", sa.Integer(), nullable=True),
        sa.Column("batch_run", sa.String(64), nullable=True),
        sa.Column("batch_prompt", sa.String(200), nullable=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("judge", sa.String(200), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("template_hash", sa.String(64), nullable=False),
        sa.Column("model_a", sa.String(200), nullable=False),
        sa.Column("model_b", sa.String(200), nullable=True),
        sa.Column("verdict_ab", sa.String(8), nullable=True),
        sa.Column("verdict_ba", sa.String(8), nullable=True),
        sa.Column("final", sa.String(8), nullable=False),
        sa.Column("consistent", sa.Boolean(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("raw_ab", sa.Text(), nullable=False),
        sa.Column("raw_ba", sa.Text(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("(comparison_id IS NOT NULL) OR (batch_run IS NOT NULL)", name="ck_judge_verdict_target"),
    )
    # A comparison's verdicts, and the cascade's lookup (owner first: every read filters by it).
    op.create_index("ix_judge_verdict_owner_comparison", "judge_verdict", ["owner", "comparison_id"])
    op.create_index("ix_judge_verdict_comparison_id", "judge_verdict", ["comparison_id"])
    op.create_index("ix_judge_verdict_owner_batch", "judge_verdict", ["owner", "batch_run"])


def downgrade() -> None:
    op.drop_index("ix_judge_verdict_owner_batch", table_name="judge_verdict")
    op.drop_index("ix_judge_verdict_comparison_id", table_name="judge_verdict")
    op.drop_index("ix_judge_verdict_owner_comparison", table_name="judge_verdict")
    op.drop_table("judge_verdict")
