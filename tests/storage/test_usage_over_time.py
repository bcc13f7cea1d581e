"""usage_over_time: every bucket of the dashboard's chart from one grouped query, equal to usage_stats per bucket."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from storage import repository as repo
from storage.errors import InvalidInput
from storage.models import Message, table_of
from tests.storage.helpers import add_turn

STEP = timedelta(hours=1)
# Aligned like the dashboard's buckets; microseconds off so a reply can sit exactly on an edge too.
START = datetime(2026, 3, 1, 12, tzinfo=UTC)
EDGES = [START + STEP * i for i in range(7)]  # six buckets
messages = table_of(Message)
MODELS = [("demo", "echo"), ("demo", "fast"), ("openai", "gpt-x"), ("anthropic", "claude-y")]


def _move(engine, message_id, moment: datetime) -> None:
    with engine.begin() as connection:
        # Core with the typed columns, so each backend stores the time as the repository does.
        connection.execute(sa.update(messages).where(messages.c.id == message_id).values(created_at=moment))


def _spread(session, engine) -> None:
    """Replies of four models and two owners over the buckets, before and after them, and on their edges."""
    rng = random.Random(7)
    for owner in ("alice", "bob"):
        conversation = repo.create_conversation(session=session, owner=owner).id
        for i in range(40):
            provider, model = MODELS[i % len(MODELS)]
            failed = i % 9 == 0
            ids = add_turn(
                session, owner, conversation, f"q{i}", "" if failed else f"a{i}", provider=provider, model=model,
                finish_reason="error" if failed else "stop", error="boom" if failed else None,
                ttft_ms=rng.randint(50, 2000) if i % 7 else None, duration_ms=rng.randint(2000, 9000),
                input_tokens=rng.randint(1, 500), output_tokens=rng.choice([0, 5, 10, 120, 800]),
            )  # fmt: skip
            if i < 3:  # exactly on an edge: it belongs to the bucket that starts there
                moment = EDGES[i * 2]
            elif i < 5:  # before the first bucket, or at the end edge (outside: the last bucket ends there)
                moment = EDGES[0] - timedelta(minutes=1) if i == 3 else EDGES[-1]
            else:
                moment = EDGES[0] + timedelta(seconds=rng.randint(0, int((EDGES[-1] - EDGES[0]).total_seconds()) - 1))
            _move(engine, ids.assistant_message_id, moment)
        # A reply still streaming counts nowhere.
        pending = repo.begin_turn(session=session, owner=owner, conversation_id=conversation, content="p",
                                  provider="demo", model="echo")  # fmt: skip
        _move(engine, pending.assistant_message_id, EDGES[1] + timedelta(minutes=5))


def _run(session, engine, *, blind: bool, vote: bool, models: list[str], moment: datetime) -> None:
    panes = [{"provider": ref.split(":")[0], "model": ref.split(":")[1]} for ref in models]
    ids = repo.begin_comparison(session=session, owner="alice", prompt="which is better", panes=panes, blind=blind)
    for pane in ids.panes:
        repo.finish_turn(session=session, owner="alice", message_id=pane.assistant_message_id, content="reply",
                         finish_reason="stop", ttft_ms=300 + pane.slot, duration_ms=3000, input_tokens=7,
                         output_tokens=70)  # fmt: skip
        _move(engine, pane.assistant_message_id, moment)
    if vote:
        repo.vote_comparison(session=session, owner="alice", comparison_id=ids.comparison_id, verdict="tie")


def _per_bucket(session, owner, edges):
    return [repo.usage_stats(session=session, owner=owner, since=a, until=b) for a, b in zip(edges, edges[1:])]


@pytest.mark.parametrize("owner", ["alice", None])
def test_grouped_buckets_equal_usage_stats_per_bucket(session, engine, owner):
    _spread(session, engine)
    # Unvoted blind panes are left out, as usage_stats leaves them out; voted and open runs count.
    _run(session, engine, blind=True, vote=False, models=["secretprov:hidden-a", "otherprov:hidden-b"], moment=EDGES[2] + STEP / 2)
    _run(session, engine, blind=True, vote=True, models=["votedprov:named-a", "demo:echo"], moment=EDGES[3] + STEP / 3)
    _run(session, engine, blind=False, vote=False, models=["openprov:open-a", "demo:fast"], moment=EDGES[4])

    grouped = repo.usage_over_time(session=session, owner=owner, edges=EDGES)

    expected = _per_bucket(session, owner, EDGES)
    assert len(grouped) == len(EDGES) - 1
    assert grouped == expected
    assert sum(len(b) for b in grouped) >= 12, "the data should spread over several buckets and models"
    assert all(b for b in grouped), "every bucket should hold something, or the comparison proves little"
    named = {f"{s.provider}:{s.model}" for bucket in grouped for s in bucket}
    assert {"votedprov:named-a", "openprov:open-a"} <= named
    assert not named & {"secretprov:hidden-a", "otherprov:hidden-b"}


def test_edge_cases(session, engine):
    _spread(session, engine)
    # One bucket is usage_stats over its bounds; buckets past the data are empty lists.
    assert repo.usage_over_time(session=session, owner="alice", edges=EDGES[:2]) == _per_bucket(session, "alice", EDGES[:2])
    later = [EDGES[-1] + STEP * i for i in range(1, 5)]  # EDGES[-1] itself holds a reply
    assert repo.usage_over_time(session=session, owner="alice", edges=later) == [[], [], []] == _per_bucket(session, "alice", later)
    # Naive bounds are taken as UTC, as usage_stats takes them.
    naive = [e.replace(tzinfo=None) for e in EDGES]
    assert repo.usage_over_time(session=session, owner="bob", edges=naive) == _per_bucket(session, "bob", EDGES)
    assert repo.usage_over_time(session=session, owner="nobody", edges=EDGES) == [[] for _ in EDGES[1:]]


@pytest.mark.parametrize("edges", [[], [START], [START, START], [START + STEP, START], "2026-03-01", [START, "later"]])
def test_bad_edges(session, edges):
    with pytest.raises(InvalidInput):
        repo.usage_over_time(session=session, owner="alice", edges=edges)


def test_one_grouped_query_whatever_the_number_of_buckets(session, engine):
    _spread(session, engine)
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # (conn, cursor, statement, ...)
    edges = [START + timedelta(minutes=5) * i for i in range(31)]  # the dashboard's most: 30 buckets
    event.listen(engine, "before_cursor_execute", listener)
    try:
        repo.usage_over_time(session=session, owner="alice", edges=edges)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    # PostgreSQL computes the percentiles in the query; SQLite reads the times once more to compute them.
    assert len(selects) == (1 if engine.dialect.name == "postgresql" else 2), selects
