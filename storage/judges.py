"""LLM judge verdicts: stored apart from the human votes, one row per judge and pair (or rubric score).

A row belongs to an owner and to either a comparison (its panes by slot) or a batch run (run id and
prompt id; batch runs are not in the database, the row names them). The judge never saw the model
names; the row keeps them (model_a, model_b) so verdicts can be ranked. Blind secrecy: until a
blind comparison has its vote, its verdicts are read back without the model names and are left
out of the judge leaderboard (storage/blind.py's predicate), as its panes are.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel

from storage import blind
from storage.errors import InvalidInput, NotFound
from storage.guard import guarded
from storage.models import OWNER_MAX, Comparison, ComparisonPane, ComparisonVote, Message, table_of, utcnow
from storage.validation import check_owner, clean_text, parse_id

FINALS = frozenset({"a", "b", "tie", "none"})
ORDER_VERDICTS = frozenset({"1", "2", "tie"})
KINDS = frozenset({"pair", "rubric"})
MAX_VERDICTS_READ = 100_000


class JudgeVerdict(SQLModel, table=True):
    """One judge's verdict on two answers (kind "pair", both orders) or its score of one (kind "rubric")."""

    __tablename__ = "judge_verdict"
    __table_args__ = (sa.Index("ix_judge_verdict_owner_comparison", "owner", "comparison_id"),
                      sa.Index("ix_judge_verdict_comparison_id", "comparison_id"),
                      sa.Index("ix_judge_verdict_owner_batch", "owner", "batch_run"),
                      sa.CheckConstraint("(comparison_id IS NOT NULL) OR (batch_run IS NOT NULL)",
                                         name="ck_judge_verdict_target"))

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    owner: str = Field(max_length=OWNER_MAX)
    comparison_id: uuid.UUID | None = Field(default=None, foreign_key="comparison.id", ondelete="CASCADE")
    slot_a: int | None = None
    slot_b: int | None = None
    batch_run: str | None = Field(default=None, max_length=64)
    batch_prompt: str | None = Field(default=None, max_length=200)
    kind: str = Field(default="pair", max_length=8)
    judge: str = Field(max_length=200)  # provider:model
    template: str = Field(sa_type=sa.Text)
    template_hash: str = Field(max_length=64)
    model_a: str = Field(max_length=200)
    model_b: str | None = Field(default=None, max_length=200)
    verdict_ab: str | None = Field(default=None, max_length=8)
    verdict_ba: str | None = Field(default=None, max_length=8)
    final: str = Field(default="none", max_length=8)
    consistent: bool | None = None
    score: float | None = None  # rubric: 0..1
    raw_ab: str = Field(default="", sa_type=sa.Text)
    raw_ba: str | None = Field(default=None, sa_type=sa.Text)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    error: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = Field(default_factory=utcnow)


class JudgeVerdictPublic(SQLModel):
    """A stored verdict as read back (model names None while its blind comparison has no vote)."""

    id: uuid.UUID
    comparison_id: uuid.UUID | None
    slot_a: int | None
    slot_b: int | None
    batch_run: str | None
    batch_prompt: str | None
    kind: str
    judge: str
    template: str
    template_hash: str
    model_a: str | None
    model_b: str | None
    verdict_ab: str | None
    verdict_ba: str | None
    final: str
    consistent: bool | None
    score: float | None
    raw_ab: str
    raw_ba: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    error: str | None
    created_at: datetime
    #: The user's vote on the same pair, as a/b/tie (None: no vote, or it says nothing about this pair).
    human: str | None = None


class JudgeSubject(SQLModel):
    """What a judge is shown of a comparison, and what the rows need (`models` stay on the server)."""

    comparison_id: uuid.UUID
    prompt: str
    blind: bool
    voted: bool
    slots: list[int]
    models: list[str]
    texts: list[str]
    errors: list[str | None]


def _owned_comparison(session: Session, owner: str, comparison_id: object) -> Any:
    cid = parse_id(comparison_id, "comparison")
    c = table_of(Comparison)
    row = session.execute(sa.select(c.c.id, c.c.prompt, c.c.blind).where(c.c.id == cid, c.c.owner == owner)).first()
    if row is None:
        raise NotFound(f"No comparison with id {str(cid)!r}.")
    return row


@guarded
def judge_subject(*, session: Session, owner: str, comparison_id: uuid.UUID | str) -> JudgeSubject:
    """A comparison of this owner as judges need it: the prompt and every pane's model and reply.

    The models are the real ones (the rows store them); callers must not show them before a blind vote.
    """
    owner = check_owner(owner)
    run = _owned_comparison(session, owner, comparison_id)
    p, m = table_of(ComparisonPane).c, table_of(Message).c
    panes = session.execute(
        sa.select(p.slot, m.provider, m.model, m.content, m.error).join(table_of(Message), m.id == p.message_id)
        .where(p.comparison_id == run.id, m.owner == owner).order_by(p.slot)
    ).all()  # fmt: skip
    voted = session.execute(sa.select(table_of(ComparisonVote).c.id).where(
        table_of(ComparisonVote).c.comparison_id == run.id)).first() is not None  # fmt: skip
    return JudgeSubject(comparison_id=run.id, prompt=run.prompt, blind=bool(run.blind), voted=voted,
                        slots=[r.slot for r in panes], models=[f"{r.provider}:{r.model}" for r in panes],
                        texts=[r.content or "" for r in panes], errors=[r.error for r in panes])


def _check_row(owner: str, v: dict[str, Any]) -> dict[str, Any]:
    kind = v.get("kind", "pair")
    if kind not in KINDS:
        raise InvalidInput(f"Unknown verdict kind {str(kind)[:20]!r}.")
    final = v.get("final", "none")
    if final not in FINALS:
        raise InvalidInput(f"Unknown final verdict {str(final)[:20]!r}.")
    for key in ("verdict_ab", "verdict_ba"):
        if v.get(key) is not None and v[key] not in ORDER_VERDICTS:
            raise InvalidInput(f"Unknown {key} {str(v[key])[:20]!r}.")
    for key in ("cost_usd", "score"):
        value = v.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
                                  or value < 0):
            raise InvalidInput(f"{key} must be a non-negative number.")
    row = {k: v.get(k) for k in ("comparison_id", "slot_a", "slot_b", "batch_run", "batch_prompt", "kind", "judge",
                                 "template", "template_hash", "model_a", "model_b", "verdict_ab", "verdict_ba", "final",
                                 "consistent", "score", "raw_ab", "raw_ba", "input_tokens", "output_tokens", "cost_usd",
                                 "error")}  # fmt: skip
    row.update(kind=kind, final=final, owner=owner, id=uuid.uuid4(), created_at=utcnow(),
               template=clean_text(row["template"], "judge template"), raw_ab=clean_text(row["raw_ab"] or "", "judge output",
                                                                                       optional=True) or "",
               raw_ba=clean_text(row["raw_ba"], "judge output", optional=True))  # fmt: skip
    if row["comparison_id"] is None and not row["batch_run"]:
        raise InvalidInput("A verdict belongs to a comparison or to a batch run.")
    return row


@guarded
def add_verdicts(*, session: Session, owner: str, verdicts: Sequence[dict[str, Any]]) -> int:
    """Store judge verdicts of this owner (a comparison they name must be this owner's); returns how many."""
    owner = check_owner(owner)
    rows = [_check_row(owner, dict(v)) for v in verdicts]
    for cid in {r["comparison_id"] for r in rows if r["comparison_id"] is not None}:
        _owned_comparison(session, owner, cid)
    for r in rows:
        if r["comparison_id"] is not None:
            r["comparison_id"] = parse_id(r["comparison_id"], "comparison")
    if rows:
        session.execute(sa.insert(table_of(JudgeVerdict)), rows)
    session.commit()
    return len(rows)


def _human(verdict: str | None, winner: int | None, slot_a: int | None, slot_b: int | None) -> str | None:
    if verdict is None or slot_a is None or slot_b is None:
        return None
    if verdict == "slot":
        return "a" if winner == slot_a else "b" if winner == slot_b else None
    return "tie" if verdict in ("tie", "both_bad") else None


def _select(owner: str) -> sa.Select[Any]:
    j, v, c = table_of(JudgeVerdict), table_of(ComparisonVote).c, table_of(Comparison)
    return (sa.select(j, v.verdict.label("vote_verdict"), v.winner_slot.label("vote_slot"),
                      sa.case((blind.unvoted_blind(c), True), else_=False).label("secret"))
            .select_from(j.outerjoin(c, c.c.id == j.c.comparison_id).outerjoin(table_of(ComparisonVote),
                                                                               v.comparison_id == j.c.comparison_id))
            .where(j.c.owner == owner))  # fmt: skip


def _public(row: Any) -> JudgeVerdictPublic:
    data = {k: row[k] for k in JudgeVerdictPublic.model_fields if k in row and k != "human"}
    if row["secret"]:
        data.update(model_a=None, model_b=None)
    else:
        data["human"] = _human(row["vote_verdict"], row["vote_slot"], row["slot_a"], row["slot_b"])
    return JudgeVerdictPublic(**data)


@guarded
def comparison_verdicts(*, session: Session, owner: str, comparison_id: uuid.UUID | str) -> list[JudgeVerdictPublic]:
    """The judge verdicts on one comparison of this owner, oldest first (no model names before a blind vote)."""
    owner = check_owner(owner)
    run = _owned_comparison(session, owner, comparison_id)
    j = table_of(JudgeVerdict).c
    query = _select(owner).where(j.comparison_id == run.id).order_by(j.created_at, j.judge, j.slot_a, j.slot_b)
    return [_public(r) for r in session.execute(query).mappings()]


@guarded
def judge_verdicts(*, session: Session, owner: str, batch_run: str | None = None,
                   include_secret: bool = False) -> list[JudgeVerdictPublic]:
    """This owner's verdicts (of one batch run when given), oldest first, for the judge leaderboard and audits.

    Verdicts on unvoted blind comparisons are left out unless `include_secret` (then without names).
    """
    owner = check_owner(owner)
    j, c = table_of(JudgeVerdict).c, table_of(Comparison)
    query = _select(owner)
    if batch_run is not None:
        query = query.where(j.batch_run == batch_run)
    if not include_secret:
        query = query.where(sa.or_(j.comparison_id.is_(None), ~blind.unvoted_blind(c)))
    query = query.order_by(j.created_at, j.id).limit(MAX_VERDICTS_READ)
    return [_public(r) for r in session.execute(query).mappings()]
