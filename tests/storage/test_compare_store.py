"""Compare mode in the store: runs, hidden pane conversations, costs, votes, exports, owner scoping."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlmodel import Session

from storage import db
from storage import repository as repo
from storage.errors import Conflict, InvalidInput, NotFound


def run(session, owner, prompt, refs, *, follow=None, blind=False, replies=None, finish="stop"):
    """One compare run over `refs` ("provider:model"), every pane finished; returns the ids."""
    panes = []
    for slot, ref in enumerate(refs):
        provider, model = ref.split(":", 1)
        pane = {"provider": provider, "model": model, "params": {"temperature": 0.1 * slot}}
        if follow is not None:
            pane["conversation_id"] = follow.panes[slot].conversation_id
        panes.append(pane)
    ids = repo.begin_comparison(session=session, owner=owner, prompt=prompt, panes=panes, blind=blind)
    for pane in ids.panes:
        repo.finish_turn(
            session=session, owner=owner, message_id=pane.assistant_message_id,
            content=(replies or {}).get(pane.slot, f"reply {pane.slot} to {prompt}"), finish_reason=finish,
            ttft_ms=100 + pane.slot, duration_ms=1000, input_tokens=5, output_tokens=50,
        )  # fmt: skip
    return ids


def test_run_creates_hidden_pane_conversations_that_stats_count(session):
    repo.create_conversation(session=session, owner="alice", title="A real chat")
    ids = run(session, "alice", "Which is bigger?", ["openai:gpt-x", "anthropic:claude-y", "openai:gpt-x"])
    assert [p.slot for p in ids.panes] == [0, 1, 2]
    assert len({p.conversation_id for p in ids.panes}) == 3

    # The sidebar list shows chats only; the panes are there when asked for.
    assert [c.title for c in repo.list_conversations(session=session, owner="alice")] == ["A real chat"]
    panes = repo.list_conversations(session=session, owner="alice", kind="compare_pane")
    assert sorted(c.title for c in panes) == ["Which is bigger?"] * 3
    assert len(repo.list_conversations(session=session, owner="alice", kind=None)) == 4
    with pytest.raises(InvalidInput):
        repo.list_conversations(session=session, owner="alice", kind="nonsense")

    # Pane replies are ordinary assistant messages: the dashboard's statistics see them.
    stats = {(s.provider, s.model): s for s in repo.usage_stats(session=session, owner="alice")}
    assert stats[("openai", "gpt-x")].count == 2 and stats[("anthropic", "claude-y")].count == 1
    assert stats[("openai", "gpt-x")].output_tokens == 100

    detail = repo.get_comparison(session=session, owner="alice", comparison_id=ids.comparison_id)
    assert detail.prompt == "Which is bigger?" and detail.vote is None and not detail.blind
    assert [(p.slot, p.message.provider, p.message.model) for p in detail.panes] == [
        (0, "openai", "gpt-x"), (1, "anthropic", "claude-y"), (2, "openai", "gpt-x")]  # fmt: skip
    assert detail.panes[1].message.content == "reply 1 to Which is bigger?"
    assert detail.panes[1].message.params == {"temperature": 0.1}
    assert detail.panes[2].message.ttft_ms == 102 and detail.panes[2].message.finish_reason == "stop"


def test_follow_up_continues_each_pane_history(session):
    first = run(session, "alice", "first", ["demo:a", "demo:b"])
    second = run(session, "alice", "second", ["demo:a", "demo:b"], follow=first)
    assert [p.conversation_id for p in second.panes] == [p.conversation_id for p in first.panes]
    for pane in second.panes:
        messages = repo.get_conversation(session=session, owner="alice", conversation_id=pane.conversation_id).messages
        assert [(m.role, m.content) for m in messages] == [
            ("user", "first"), ("assistant", f"reply {pane.slot} to first"),
            ("user", "second"), ("assistant", f"reply {pane.slot} to second")]  # fmt: skip
    # A chat conversation, or another owner's pane, cannot be continued as a pane.
    chat = repo.create_conversation(session=session, owner="alice")
    with pytest.raises(NotFound):
        repo.begin_comparison(session=session, owner="alice", prompt="x", panes=[
            {"provider": "demo", "model": "a", "conversation_id": chat.id}, {"provider": "demo", "model": "b"}])
    with pytest.raises(NotFound):
        repo.begin_comparison(session=session, owner="bob", prompt="x", panes=[
            {"provider": "demo", "model": "a", "conversation_id": first.panes[0].conversation_id},
            {"provider": "demo", "model": "b"}])  # fmt: skip


@pytest.mark.parametrize(
    "kwargs",
    [
        {"prompt": "   "},
        {"panes": [{"provider": "demo", "model": "a"}]},
        {"panes": [{"provider": "demo", "model": str(i)} for i in range(5)]},
        {"panes": [{"provider": "demo", "model": "a", "api_key": "sk-x"}, {"provider": "demo", "model": "b"}]},
        {"panes": [{"provider": "demo", "model": "a", "params": {"api_key": "sk"}}, {"provider": "demo", "model": "b"}]},
        {"blind": "yes"},
    ],
)
def test_begin_refuses_bad_runs_and_writes_nothing(session, engine, kwargs):
    args = {"prompt": "hello", "panes": [{"provider": "demo", "model": "a"}, {"provider": "demo", "model": "b"}], **kwargs}
    with pytest.raises(InvalidInput):
        repo.begin_comparison(session=session, owner="alice", **args)
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM comparison")).scalar_one() == 0
        assert c.execute(text("SELECT count(*) FROM conversation")).scalar_one() == 0
        assert c.execute(text("SELECT count(*) FROM message")).scalar_one() == 0


def test_vote_is_stored_once_and_validated(session):
    ids = run(session, "alice", "q", ["demo:a", "demo:b", "demo:c"], blind=True)
    for bad in [dict(verdict="slot"), dict(verdict="slot", winner_slot=3), dict(verdict="tie", winner_slot=0),
                dict(verdict="maybe"), dict(verdict="slot", winner_slot=True)]:  # fmt: skip
        with pytest.raises(InvalidInput):
            repo.vote_comparison(session=session, owner="alice", comparison_id=ids.comparison_id, **bad)
    with pytest.raises(NotFound):
        repo.vote_comparison(session=session, owner="bob", comparison_id=ids.comparison_id, verdict="tie")
    vote = repo.vote_comparison(session=session, owner="alice", comparison_id=ids.comparison_id, verdict="slot", winner_slot=2)
    assert vote.winner_slot == 2
    with pytest.raises(Conflict):
        repo.vote_comparison(session=session, owner="alice", comparison_id=ids.comparison_id, verdict="tie")
    detail = repo.get_comparison(session=session, owner="alice", comparison_id=ids.comparison_id)
    assert detail.blind and detail.vote.verdict == "slot" and detail.vote.winner_slot == 2


def test_costs(session):
    ids = run(session, "alice", "q", ["demo:a", "demo:b"])
    repo.set_comparison_costs(session=session, owner="alice", comparison_id=ids.comparison_id, costs={0: 0.0012, 1: None})
    detail = repo.get_comparison(session=session, owner="alice", comparison_id=ids.comparison_id)
    assert [p.cost_usd for p in detail.panes] == [pytest.approx(0.0012), None]
    for bad in [{0: -1.0}, {0: float("nan")}, {"0": 1.0}]:
        with pytest.raises(InvalidInput):
            repo.set_comparison_costs(session=session, owner="alice", comparison_id=ids.comparison_id, costs=bad)
    with pytest.raises(NotFound):
        repo.set_comparison_costs(session=session, owner="alice", comparison_id=ids.comparison_id, costs={7: 1.0})
    with pytest.raises(NotFound):
        repo.set_comparison_costs(session=session, owner="bob", comparison_id=ids.comparison_id, costs={0: 1.0})


def test_votes_for_the_leaderboard_are_owner_scoped_unless_shared(session):
    a1 = run(session, "alice", "q1", ["demo:x", "demo:y"], blind=True)
    a2 = run(session, "alice", "q2", ["demo:y", "demo:z", "demo:x"])
    run(session, "alice", "no vote yet", ["demo:x", "demo:y"])
    b1 = run(session, "bob", "q3", ["demo:z", "demo:x"], blind=True)
    repo.vote_comparison(session=session, owner="alice", comparison_id=a1.comparison_id, verdict="slot", winner_slot=1)
    repo.vote_comparison(session=session, owner="alice", comparison_id=a2.comparison_id, verdict="both_bad")
    repo.vote_comparison(session=session, owner="bob", comparison_id=b1.comparison_id, verdict="tie")

    mine = repo.comparison_votes(session=session, owner="alice")
    assert [(v.models, v.verdict, v.winner_slot, v.blind) for v in mine] == [
        (["demo:x", "demo:y"], "slot", 1, True), (["demo:y", "demo:z", "demo:x"], "both_bad", None, False)]  # fmt: skip
    assert [v.verdict for v in repo.comparison_votes(session=session, owner="alice", blind_only=True)] == ["slot"]
    assert [v.models for v in repo.comparison_votes(session=session, owner="bob")] == [["demo:z", "demo:x"]]
    everyone = repo.comparison_votes(session=session, owner=None)
    assert sorted(v.verdict for v in everyone) == ["both_bad", "slot", "tie"]


def test_export_is_owner_scoped_oldest_first(session):
    first = run(session, "alice", "one", ["demo:a", "demo:b"], replies={0: "<b>kept as text</b>"})
    run(session, "alice", "two", ["demo:a", "demo:b"], follow=first)
    run(session, "bob", "bob's", ["demo:a", "demo:b"])
    repo.vote_comparison(session=session, owner="alice", comparison_id=first.comparison_id, verdict="tie")
    exported = repo.export_comparisons(session=session, owner="alice")
    assert [c.prompt for c in exported] == ["one", "two"]
    assert exported[0].vote.verdict == "tie" and exported[1].vote is None
    assert exported[0].panes[0].message.content == "<b>kept as text</b>"
    assert repo.export_comparisons(session=session, owner="carol") == []


def test_deleting_a_pane_conversation_removes_its_pane_rows(session, engine):
    ids = run(session, "alice", "q", ["demo:a", "demo:b"])
    repo.delete_conversation(session=session, owner="alice", conversation_id=ids.panes[0].conversation_id)
    detail = repo.get_comparison(session=session, owner="alice", comparison_id=ids.comparison_id)
    assert [p.slot for p in detail.panes] == [1]


def test_migration_from_0002_keeps_chats_and_downgrade_keeps_messages(empty_engine):
    import uuid

    from alembic import command

    db.migrate(empty_engine, "0002")
    sqlite = empty_engine.dialect.name == "sqlite"
    as_id = (lambda u: u.hex) if sqlite else str
    when = "2024-05-01 10:00:00.000000" if sqlite else "2024-05-01 10:00:00+00"
    conversation = uuid.uuid4()
    with empty_engine.begin() as c:  # rows as revision 0002 wrote them (the models are at head)
        c.execute(text("INSERT INTO conversation (id, owner, title, pinned, archived, created_at, updated_at) "
                       "VALUES (:id, 'alice', 'Old chat', :f, :f, :when, :when)"),
                  {"id": as_id(conversation), "f": False, "when": when})
        c.execute(text("INSERT INTO message (id, conversation_id, owner, position, role, content, created_at) "
                       "VALUES (:id, :c, 'alice', 0, 'user', 'old message', :when)"),
                  {"id": as_id(uuid.uuid4()), "c": as_id(conversation), "when": when})  # fmt: skip
    db.init_db(empty_engine)
    indexes = {i["name"]: i["column_names"] for i in inspect(empty_engine).get_indexes("conversation")}
    assert indexes["ix_conversation_owner_list"][:2] == ["owner", "kind"]
    with Session(empty_engine) as s:
        assert [c.title for c in repo.list_conversations(session=s, owner="alice")] == ["Old chat"]
        run(s, "alice", "compare me", ["demo:a", "demo:b"])
    config = db.alembic_config()
    with empty_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    with empty_engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM conversation")).scalar_one() == 1
        assert c.execute(text("SELECT content FROM message")).scalars().all() == ["old message"]
    db.init_db(empty_engine)


def test_search_leaves_compare_panes_out(session):
    conv = repo.create_conversation(session=session, owner="alice", first_prompt="zebra facts")
    repo.begin_turn(session=session, owner="alice", conversation_id=conv.id, content="tell me about zebra stripes")
    run(session, "alice", "zebra blind question", ["openai:gpt-x", "anthropic:claude-y"], blind=True,
        replies={0: "zebra answer one", 1: "zebra answer two"})
    hits = repo.search_messages(session=session, owner="alice", query="zebra")
    assert [h.conversation_id for h in hits] == [conv.id], "only the chat is found, never a (blind) pane"
