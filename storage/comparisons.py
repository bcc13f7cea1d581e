"""Compare mode: runs of one prompt over 2 to 4 panes, their costs, the one vote, the exports and the leaderboard's votes."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from storage import blind
from storage.attachments import AttachmentLike, check_attachments
from storage.errors import Conflict, InvalidInput, NotFound
from storage.guard import guarded, rowcount
from storage.models import (
    KIND_COMPARE_PANE,
    MAX_PANES,
    MESSAGE_PUBLIC_COLUMNS,
    MIN_PANES,
    VERDICTS,
    Comparison,
    ComparisonDetail,
    ComparisonIds,
    ComparisonPane,
    ComparisonPanePublic,
    ComparisonVote,
    ComparisonVotePublic,
    Conversation,
    Message,
    MessagePublic,
    PaneIds,
    PaneStart,
    VoteRecord,
    table_of,
    utcnow,
)
from storage.turns import add_turn
from storage.validation import auto_title, check_name, check_owner, check_params, clean_text, parse_id

MAX_COMPARISON_EXPORT = 100_000


@guarded
def begin_comparison(
    *,
    session: Session,
    owner: str,
    prompt: str,
    panes: list[PaneStart | dict[str, Any]],
    blind: bool = False,
    attachments: Sequence[AttachmentLike] = (),
) -> ComparisonIds:
    """Start one compare run: per pane, the user message and a pending reply, plus the run's rows.

    `panes` are in slot order (the order shown). A pane without `conversation_id` gets a new hidden
    pane conversation (kind "compare_pane", titled from the prompt); one with an id continues that
    pane conversation (a follow-up), which must be this owner's pane conversation. All of it is one
    transaction. Finish each reply with finish_turn, as a chat reply. `attachments` (as for
    begin_turn) go with the prompt into every pane's user message: stored once, linked from each.
    """
    owner = check_owner(owner)
    prompt = clean_text(prompt, "prompt")
    if not prompt.strip():
        raise InvalidInput("The prompt is empty.")
    if not isinstance(blind, bool):
        raise InvalidInput("blind must be true or false.")
    if not isinstance(panes, list | tuple) or not MIN_PANES <= len(panes) <= MAX_PANES:
        raise InvalidInput(f"A comparison needs {MIN_PANES} to {MAX_PANES} panes.")
    starts = [PaneStart.model_validate(p) for p in panes]
    files = check_attachments(attachments) if attachments else []
    continued = [p.conversation_id for p in starts if p.conversation_id is not None]
    if len(set(continued)) != len(continued):
        raise InvalidInput("Two panes cannot continue the same conversation.")
    if continued:
        found = set(session.exec(
            select(Conversation.id).where(
                col(Conversation.id).in_(continued), Conversation.owner == owner, Conversation.kind == KIND_COMPARE_PANE
            )
        ).all())  # fmt: skip
        for wanted in continued:
            if wanted not in found:
                raise NotFound(f"No compare pane conversation with id {str(wanted)!r}.")
    now = utcnow()
    comparison_id = uuid.uuid4()
    pane_ids: list[PaneIds] = []
    for slot, pane in enumerate(starts):
        system_prompt = clean_text(pane.system_prompt, "system prompt", optional=True) or None
        new = pane.conversation_id is None
        cid = pane.conversation_id or uuid.uuid4()
        if new:
            session.execute(
                sa.insert(table_of(Conversation)).values(
                    id=cid, owner=owner, kind=KIND_COMPARE_PANE, title=auto_title(prompt),
                    model=check_name(f"{pane.provider}:{pane.model}", "model"),
                    system_prompt=system_prompt, params=check_params(pane.params),
                    pinned=False, archived=False, created_at=now, updated_at=now,
                )
            )  # fmt: skip
        ids = add_turn(session, owner, cid, prompt, pane.provider, pane.model, pane.params, system_prompt, commit=False, files=files,
                       new=new)  # fmt: skip
        pane_ids.append(PaneIds(slot=slot, conversation_id=cid, assistant_message_id=ids.assistant_message_id))
    session.execute(
        sa.insert(table_of(Comparison)).values(id=comparison_id, owner=owner, prompt=prompt, blind=blind, created_at=now)
    )
    session.execute(
        sa.insert(table_of(ComparisonPane)),
        [dict(id=uuid.uuid4(), comparison_id=comparison_id, slot=p.slot, message_id=p.assistant_message_id, cost_usd=None)
         for p in pane_ids],
    )  # fmt: skip
    session.commit()
    session.expire_all()
    return ComparisonIds(comparison_id=comparison_id, panes=pane_ids)


def _owned_comparison(session: Session, owner: str, comparison_id: object) -> Comparison:
    cid = parse_id(comparison_id, "comparison")
    row = session.exec(select(Comparison).where(Comparison.id == cid, Comparison.owner == owner)).first()
    if row is None:
        raise NotFound(f"No comparison with id {str(cid)!r}.")
    return row


@guarded
def set_comparison_costs(
    *, session: Session, owner: str, comparison_id: uuid.UUID | str, costs: dict[int, float | None]
) -> None:
    """Record each pane's cost in USD (by slot; None when the model has no known price)."""
    owner = check_owner(owner)
    comparison = _owned_comparison(session, owner, comparison_id)
    if not isinstance(costs, dict):
        raise InvalidInput("Costs must be a mapping of slot to USD.")
    table = table_of(ComparisonPane)
    for slot, value in costs.items():
        if isinstance(slot, bool) or not isinstance(slot, int):
            raise InvalidInput("A pane slot must be a whole number.")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InvalidInput("A cost must be a non-negative number of USD.")
            value = float(value)
        result = session.execute(
            sa.update(table).where(table.c.comparison_id == comparison.id, table.c.slot == slot).values(cost_usd=value)
        )
        if rowcount(result) == 0:
            raise NotFound(f"This comparison has no pane {slot}.")
    session.commit()


@guarded
def vote_comparison(
    *,
    session: Session,
    owner: str,
    comparison_id: uuid.UUID | str,
    verdict: str,
    winner_slot: int | None = None,
) -> ComparisonVotePublic:
    """Record the one vote of a run: verdict "slot" (with the winning slot), "tie" or "both_bad"."""
    owner = check_owner(owner)
    if verdict not in VERDICTS:
        raise InvalidInput(f"Unknown verdict {str(verdict)[:40]!r}; expected slot, tie or both_bad.")
    comparison = _owned_comparison(session, owner, comparison_id)
    slots = set(session.exec(select(ComparisonPane.slot).where(ComparisonPane.comparison_id == comparison.id)).all())
    if verdict == "slot":
        if isinstance(winner_slot, bool) or not isinstance(winner_slot, int) or winner_slot not in slots:
            raise InvalidInput("Say which pane won (a slot of this comparison).")
    elif winner_slot is not None:
        raise InvalidInput("A tie or an all-bad vote has no winning pane.")
    existing = session.exec(select(ComparisonVote.id).where(ComparisonVote.comparison_id == comparison.id)).first()
    if existing is not None:
        raise Conflict("This comparison already has a vote.")
    row = ComparisonVote(comparison_id=comparison.id, owner=owner, verdict=verdict, winner_slot=winner_slot)
    session.add(row)
    session.flush()
    public = ComparisonVotePublic.model_validate(row)
    session.commit()
    return public


def _comparison_details(session: Session, owner: str, comparisons: list[Comparison]) -> list[ComparisonDetail]:
    if not comparisons:
        return []
    ids = [c.id for c in comparisons]
    p, m, cv = table_of(ComparisonPane).c, table_of(Message), table_of(Conversation).c
    message_columns = [m.c[name] for name in MESSAGE_PUBLIC_COLUMNS]
    panes: dict[uuid.UUID, list[ComparisonPanePublic]] = {cid: [] for cid in ids}
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start : chunk_start + 500]
        query = (
            sa.select(p.comparison_id, p.slot, p.cost_usd, cv.system_prompt.label("pane_system_prompt"), *message_columns)
            .join(m, m.c.id == p.message_id)
            .join(table_of(Conversation), cv.id == m.c.conversation_id)
            .where(p.comparison_id.in_(chunk), m.c.owner == owner)
            .order_by(p.comparison_id, p.slot)
        )
        for row in session.execute(query).mappings():
            message = MessagePublic.model_construct(**{k: row[k] for k in MESSAGE_PUBLIC_COLUMNS})
            panes[row["comparison_id"]].append(
                ComparisonPanePublic(slot=row["slot"], conversation_id=row["conversation_id"],
                                     system_prompt=row["pane_system_prompt"], cost_usd=row["cost_usd"], message=message)
            )  # fmt: skip
    votes: dict[uuid.UUID, ComparisonVotePublic] = {}
    hidden: set[uuid.UUID] = set()
    runs = table_of(Comparison)
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start : chunk_start + 500]
        for v in session.exec(select(ComparisonVote).where(col(ComparisonVote.comparison_id).in_(chunk))).all():
            votes[v.comparison_id] = ComparisonVotePublic.model_validate(v)
        hidden.update(session.execute(sa.select(runs.c.id).where(runs.c.id.in_(chunk), blind.unvoted_blind(runs))).scalars())
    return [
        ComparisonDetail(id=c.id, prompt=c.prompt, blind=c.blind, created_at=c.created_at,
                         panes=[blind.withhold(x) if c.id in hidden else x for x in sorted(panes[c.id], key=lambda x: x.slot)],
                         vote=votes.get(c.id))
        for c in comparisons
    ]  # fmt: skip


@guarded
def get_comparison(*, session: Session, owner: str, comparison_id: uuid.UUID | str) -> ComparisonDetail:
    """One run: prompt, panes in slot order (with their reply messages and costs) and the vote.

    Until a blind run has its vote, its panes carry nothing that names their models (see blind.withhold).
    """
    owner = check_owner(owner)
    return _comparison_details(session, owner, [_owned_comparison(session, owner, comparison_id)])[0]


@guarded
def export_comparisons(*, session: Session, owner: str) -> list[ComparisonDetail]:
    """Every run of this owner, oldest first, with panes and votes (for the JSONL and CSV exports).

    Unvoted blind runs come without their models, as get_comparison gives them.
    """
    owner = check_owner(owner)
    rows = session.exec(
        select(Comparison).where(Comparison.owner == owner)
        .order_by(col(Comparison.created_at), col(Comparison.id)).limit(MAX_COMPARISON_EXPORT)
    ).all()  # fmt: skip
    return _comparison_details(session, owner, list(rows))


@guarded
def comparison_votes(*, session: Session, owner: str | None, blind_only: bool = False) -> list[VoteRecord]:
    """Every vote with the models of its run by slot ("provider:model"); `owner=None` means everyone.

    The leaderboard is built from these. Only the vote's owner scopes it: a run and its panes
    always belong to the voter.
    """
    if owner is not None:
        owner = check_owner(owner)
    v, c, p, m = table_of(ComparisonVote).c, table_of(Comparison).c, table_of(ComparisonPane).c, table_of(Message).c
    query = (
        sa.select(v.comparison_id, v.verdict, v.winner_slot, c.blind, p.slot, m.provider, m.model, m.content)
        .join(table_of(Comparison), c.id == v.comparison_id)
        .join(table_of(ComparisonPane), p.comparison_id == v.comparison_id)
        .join(table_of(Message), m.id == p.message_id)
        .order_by(v.created_at, v.comparison_id, p.slot)
    )
    if owner is not None:
        query = query.where(v.owner == owner, c.owner == owner, m.owner == owner)
    if blind_only:
        query = query.where(c.blind.is_(True))
    records: dict[uuid.UUID, VoteRecord] = {}
    for row in session.execute(query).mappings():
        record = records.get(row["comparison_id"])
        if record is None:
            record = records[row["comparison_id"]] = VoteRecord(
                comparison_id=row["comparison_id"], models=[], verdict=row["verdict"],
                winner_slot=row["winner_slot"], blind=bool(row["blind"]),
            )  # fmt: skip
        record.models.append(f"{row['provider']}:{row['model']}")
        record.texts.append(row["content"] or "")
    return list(records.values())
