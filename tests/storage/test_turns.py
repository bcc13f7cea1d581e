"""A turn: the user message saved first, the reply written when it ends; Retry, Undo, feedback."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from storage import repository as repo
from storage.errors import InvalidInput, NotFound
from tests.storage.helpers import add_turn, chat


def test_begin_saves_user_message_and_pending_placeholder(session, count_rows):
    conversation = repo.create_conversation(session=session, owner="alice")
    ids = repo.begin_turn(
        session=session, owner="alice", conversation_id=conversation.id, content="Hello?",
        provider="openai", model="gpt-x", params={"temperature": 0.7}, system_prompt="Be kind.",
    )  # fmt: skip
    assert (ids.user_position, ids.assistant_position) == (0, 1)
    assert count_rows() == (1, 2)
    opened = repo.get_conversation(session=session, owner="alice", conversation_id=conversation.id)
    user, reply = opened.messages
    assert (user.id, user.role, user.content, user.finish_reason) == (ids.user_message_id, "user", "Hello?", None)
    assert (reply.id, reply.role, reply.content, reply.finish_reason) == (ids.assistant_message_id, "assistant", "", "pending")
    assert (reply.provider, reply.model, reply.params) == ("openai", "gpt-x", {"temperature": 0.7})
    # The conversation remembers what it was last used with.
    assert opened.conversation.model == "openai:gpt-x"
    assert opened.conversation.params == {"temperature": 0.7}
    assert opened.conversation.system_prompt == "Be kind."


def test_a_new_chat_with_its_first_turn_is_stored_as_create_then_begin_stores_it(session, engine):
    """begin_conversation writes a new chat and its first turn without the lock and the read a turn of an existing
    conversation needs: every column of the rows it leaves is what create_conversation and begin_turn leave."""
    import sqlalchemy as sa

    from storage.models import Conversation, table_of

    turn = dict(content="Hello?", provider="openai", model="gpt-x", params={"temperature": 0.7}, system_prompt="Be kind.")
    one = repo.begin_conversation(session=session, owner="alice", **turn)
    made = repo.create_conversation(session=session, owner="bob", first_prompt="Hello?", model="openai:gpt-x",
                                    params={"temperature": 0.7}, system_prompt="Be kind.")  # fmt: skip
    two = repo.begin_turn(session=session, owner="bob", conversation_id=made.id, **turn)
    assert (one.user_position, one.assistant_position, one.parent_id) == (two.user_position, two.assistant_position, None)

    def rows(ids, table, by):
        key = ids.conversation_id.hex if engine.dialect.name == "sqlite" else ids.conversation_id
        with engine.connect() as c:
            found = c.execute(sa.text(f"select * from {table} where {by} = :id"), {"id": key}).mappings().all()
        found = sorted(found, key=lambda r: r.get("position", 0))
        drop = {"id", "owner", "conversation_id", "parent_id", "current_leaf_id", "created_at", "updated_at"}
        return [{k: v for k, v in r.items() if k not in drop} for r in found]

    assert rows(one, "conversation", "id") == rows(two, "conversation", "id")
    for ids in (one, two):  # the leaf is the pending reply, as begin_turn leaves it
        with engine.connect() as c:
            conversations = table_of(Conversation)
            leaf = c.execute(sa.select(conversations.c.current_leaf_id)
                             .where(conversations.c.id == ids.conversation_id)).scalar_one()  # fmt: skip
        assert leaf == ids.assistant_message_id
    assert rows(one, "message", "conversation_id") == rows(two, "message", "conversation_id")
    opened = repo.get_conversation(session=session, owner="alice", conversation_id=one.conversation_id)
    assert [m.id for m in opened.messages] == [one.user_message_id, one.assistant_message_id]  # the leaf is the reply
    assert opened.messages[1].parent_id == one.user_message_id
    assert (opened.conversation.title, opened.conversation.model) == ("Hello?", "openai:gpt-x")
    # A second turn continues it as any other conversation.
    three = repo.begin_turn(session=session, owner="alice", conversation_id=one.conversation_id, content="And?")
    assert (three.user_position, three.parent_id) == (2, one.assistant_message_id)


def test_a_new_chat_whose_first_turn_is_refused_or_fails_is_not_kept(session, count_rows, monkeypatch):
    from storage import turns
    from storage.errors import StorageUnavailable

    with pytest.raises(InvalidInput):
        repo.begin_conversation(session=session, owner="alice", content="hi", provider="p", model="m", params={"x": object()})

    def gone(*args, **kwargs):  # the database goes away after the conversation's INSERT
        raise StorageUnavailable("The database is not answering.")

    monkeypatch.setattr(turns, "add_turn", gone)
    with pytest.raises(StorageUnavailable):
        repo.begin_conversation(session=session, owner="alice", content="hi")
    assert count_rows() == (0, 0)
    monkeypatch.undo()
    repo.begin_conversation(session=session, owner="alice", content="hi")
    assert count_rows() == (1, 2)


def test_finish_writes_reply_and_metrics(session):
    conversation = repo.create_conversation(session=session, owner="alice")
    ids = repo.begin_turn(session=session, owner="alice", conversation_id=conversation.id, content="2+2?", provider="p", model="m")
    before = repo.get_conversation(session=session, owner="alice", conversation_id=conversation.id).conversation.updated_at
    finished = repo.finish_turn(
        session=session, owner="alice", message_id=ids.assistant_message_id, content="4", reasoning="adding",
        finish_reason="stop", model_version="m-2025-01", input_tokens=12, output_tokens=1, reasoning_tokens=5,
        ttft_ms=250.6, duration_ms=900, tool_calls=[{"id": "c1", "name": "calc", "arguments": "{\"x\": 2}", "result": "4", "duration_ms": 3}],
    )  # fmt: skip
    reply = repo.get_conversation(session=session, owner="alice", conversation_id=conversation.id).messages[1]
    assert reply == finished
    assert (reply.content, reply.reasoning, reply.finish_reason, reply.model_version) == ("4", "adding", "stop", "m-2025-01")
    assert (reply.input_tokens, reply.output_tokens, reply.reasoning_tokens, reply.ttft_ms, reply.duration_ms) == (12, 1, 5, 251, 900)
    assert reply.tool_calls == [{"id": "c1", "name": "calc", "arguments": "{\"x\": 2}", "result": "4", "error": None, "duration_ms": 3}]
    after = repo.get_conversation(session=session, owner="alice", conversation_id=conversation.id).conversation.updated_at
    assert after >= before


def test_partial_reply_when_cancelled(session):
    conversation = repo.create_conversation(session=session, owner="alice")
    ids = repo.begin_turn(session=session, owner="alice", conversation_id=conversation.id, content="Tell a long story")
    repo.finish_turn(
        session=session, owner="alice", message_id=ids.assistant_message_id, content="Once upon a",
        finish_reason="cancelled", ttft_ms=100, duration_ms=400,
    )  # fmt: skip
    reply = repo.get_conversation(session=session, owner="alice", conversation_id=conversation.id).messages[1]
    assert (reply.content, reply.finish_reason) == ("Once upon a", "cancelled")


def test_error_reply_keeps_error_text(session):
    conversation = repo.create_conversation(session=session, owner="alice")
    ids = repo.begin_turn(session=session, owner="alice", conversation_id=conversation.id, content="hi")
    repo.finish_turn(session=session, owner="alice", message_id=ids.assistant_message_id, content="", finish_reason="error", error="Rate limited: wait 20 s")
    reply = repo.get_conversation(session=session, owner="alice", conversation_id=conversation.id).messages[1]
    assert (reply.finish_reason, reply.error) == ("error", "Rate limited: wait 20 s")


def test_finish_accepts_a_str_enum(session):
    import enum

    class Reason(str, enum.Enum):
        LENGTH = "length"

    conversation = repo.create_conversation(session=session, owner="alice")
    ids = repo.begin_turn(session=session, owner="alice", conversation_id=conversation.id, content="hi")
    finished = repo.finish_turn(session=session, owner="alice", message_id=ids.assistant_message_id, content="x", finish_reason=Reason.LENGTH)
    assert finished.finish_reason == "length"


@pytest.mark.parametrize(
    "bad",
    [
        {"finish_reason": "pending"},
        {"finish_reason": "bogus"},
        {"input_tokens": -1},
        {"output_tokens": "12"},
        {"ttft_ms": float("nan")},
        {"duration_ms": 2**40},
        {"content": None},
        {"model_version": "v" * 300},
        {"tool_calls": [{"id": "1", "name": "x", "surprise": True}]},
        {"params": {"api_key": "sk-123"}},
    ],
)
def test_finish_refuses_bad_values_and_keeps_placeholder(session, bad):
    conversation = repo.create_conversation(session=session, owner="alice")
    ids = repo.begin_turn(session=session, owner="alice", conversation_id=conversation.id, content="hi")
    kwargs = {"content": "reply", "finish_reason": "stop", **bad}
    with pytest.raises(InvalidInput):
        repo.finish_turn(session=session, owner="alice", message_id=ids.assistant_message_id, **kwargs)
    reply = repo.get_conversation(session=session, owner="alice", conversation_id=conversation.id).messages[1]
    assert (reply.content, reply.finish_reason) == ("", "pending")


def test_finish_twice_or_on_user_message_is_refused(session):
    conversation = repo.create_conversation(session=session, owner="alice")
    ids = add_turn(session, "alice", conversation.id, "hi", "hello")
    with pytest.raises(InvalidInput):
        repo.finish_turn(session=session, owner="alice", message_id=ids.assistant_message_id, content="again", finish_reason="stop")
    with pytest.raises(InvalidInput):
        repo.finish_turn(session=session, owner="alice", message_id=ids.user_message_id, content="x", finish_reason="stop")
    assert repo.get_conversation(session=session, owner="alice", conversation_id=conversation.id).messages[1].content == "hello"


def test_mark_interrupted(session):
    conversation = repo.create_conversation(session=session, owner="alice")
    done = add_turn(session, "alice", conversation.id, "one", "done")
    left = repo.begin_turn(session=session, owner="alice", conversation_id=conversation.id, content="two")
    other = repo.create_conversation(session=session, owner="bob")
    bobs = repo.begin_turn(session=session, owner="bob", conversation_id=other.id, content="three")
    # grace 0: every pending reply (no other process is running); the replica tests cover the rest.
    assert repo.mark_interrupted(session=session, grace=timedelta(0)) == 2
    assert repo.mark_interrupted(session=session, grace=timedelta(0)) == 0
    messages = repo.get_conversation(session=session, owner="alice", conversation_id=conversation.id).messages
    assert [m.finish_reason for m in messages] == [None, "stop", None, "interrupted"]
    assert messages[1].id == done.assistant_message_id and messages[3].id == left.assistant_message_id
    bob = repo.get_conversation(session=session, owner="bob", conversation_id=other.id).messages
    assert bob[1].id == bobs.assistant_message_id and bob[1].finish_reason == "interrupted"
    # An interrupted reply can still be finished if its stream comes back.
    repo.finish_turn(session=session, owner="bob", message_id=bobs.assistant_message_id, content="late", finish_reason="stop")


def test_mark_interrupted_before_keeps_newer_pending(session):
    conversation = repo.create_conversation(session=session, owner="alice")
    repo.begin_turn(session=session, owner="alice", conversation_id=conversation.id, content="live")
    assert repo.mark_interrupted(session=session, grace=timedelta(0), before=datetime.now(UTC) - timedelta(hours=1)) == 0
    assert repo.mark_interrupted(session=session, grace=timedelta(0), before=datetime.now(UTC) + timedelta(seconds=1)) == 1


def test_truncate_after_for_retry_undo_and_edit(session):
    conversation, turns = chat(session, "alice", [("q1", "a1"), ("q2", "a2"), ("q3", "a3")])
    # Retry the last reply: delete it, add a new placeholder.
    assert repo.truncate_after(session=session, owner="alice", conversation_id=conversation, position=turns[2].assistant_position) == 1
    retry = repo.begin_reply(session=session, owner="alice", conversation_id=conversation, provider="p", model="m")
    assert retry.user_message_id is None and retry.assistant_position == 5
    repo.finish_turn(session=session, owner="alice", message_id=retry.assistant_message_id, content="a3 again", finish_reason="stop")
    # Undo the last turn.
    assert repo.truncate_after(session=session, owner="alice", conversation_id=conversation, position=4) == 2
    # Edit the first prompt: everything from it on goes, then a new turn.
    assert repo.truncate_after(session=session, owner="alice", conversation_id=conversation, position=0) == 4
    add_turn(session, "alice", conversation, "q1 edited", "a1 new")
    messages = repo.get_conversation(session=session, owner="alice", conversation_id=conversation).messages
    assert [(m.position, m.content) for m in messages] == [(0, "q1 edited"), (1, "a1 new")]
    assert repo.truncate_after(session=session, owner="alice", conversation_id=conversation, position=10) == 0


@pytest.mark.parametrize("position", [-1, "1", None, True])
def test_truncate_refuses_bad_positions(session, position):
    conversation, _ = chat(session, "alice", [("q", "a")])
    with pytest.raises(InvalidInput):
        repo.truncate_after(session=session, owner="alice", conversation_id=conversation, position=position)
    assert len(repo.get_conversation(session=session, owner="alice", conversation_id=conversation).messages) == 2


def test_feedback(session):
    conversation, turns = chat(session, "alice", [("q", "a")])
    reply = turns[0].assistant_message_id
    assert repo.set_feedback(session=session, owner="alice", message_id=reply, feedback="like").feedback == "like"
    assert repo.set_feedback(session=session, owner="alice", message_id=reply, feedback="dislike").feedback == "dislike"
    assert repo.get_conversation(session=session, owner="alice", conversation_id=conversation).messages[1].feedback == "dislike"
    assert repo.set_feedback(session=session, owner="alice", message_id=reply, feedback=None).feedback is None
    with pytest.raises(InvalidInput):
        repo.set_feedback(session=session, owner="alice", message_id=reply, feedback="love")
    with pytest.raises(InvalidInput):
        repo.set_feedback(session=session, owner="alice", message_id=turns[0].user_message_id, feedback="like")


def test_content_limits_and_nul(session, count_rows):
    conversation = repo.create_conversation(session=session, owner="alice")
    with pytest.raises(InvalidInput):
        repo.begin_turn(session=session, owner="alice", conversation_id=conversation.id, content="x" * 1_000_001)
    with pytest.raises(InvalidInput):
        repo.begin_turn(session=session, owner="alice", conversation_id=conversation.id, content=["not", "text"])
    assert count_rows() == (1, 0)
    # PostgreSQL cannot store NUL; it is replaced rather than failing the turn.
    add_turn(session, "alice", conversation.id, "a\x00b", "c\x00d")
    assert [m.content for m in repo.get_conversation(session=session, owner="alice", conversation_id=conversation.id).messages] == ["a\ufffdb", "c\ufffdd"]


def test_concurrent_turns_get_distinct_positions(engine):
    with Session(engine) as session:
        conversation = repo.create_conversation(session=session, owner="alice").id
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        with Session(engine) as session:
            for i in range(10):
                try:
                    ids = repo.begin_turn(session=session, owner="alice", conversation_id=conversation, content=f"{n}-{i}")
                    repo.finish_turn(session=session, owner="alice", message_id=ids.assistant_message_id, content="ok", finish_reason="stop")
                except BaseException as e:  # noqa: BLE001
                    # A Conflict too: the conversation's row lock is taken before the next position is read, so
                    # turns queue instead of colliding (a position read under an older snapshot collided in most
                    # turns on PostgreSQL).
                    errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Session(engine) as session:
        messages = repo.get_conversation(session=session, owner="alice", conversation_id=conversation).messages
    assert [m.position for m in messages] == list(range(len(messages)))
    assert len(messages) == 4 * 10 * 2
    assert all(m.role == ("user" if m.position % 2 == 0 else "assistant") for m in messages)


def test_begin_on_missing_conversation_writes_nothing(session, count_rows):
    import uuid

    with pytest.raises(NotFound):
        repo.begin_turn(session=session, owner="alice", conversation_id=uuid.uuid4(), content="hi")
    assert count_rows() == (0, 0)


def test_save_partial_keeps_a_streaming_reply_and_never_touches_a_finished_one(session):
    from storage.errors import NotFound as _NotFound  # noqa: F401 - ids of others just do nothing

    conv = repo.create_conversation(session=session, owner="alice", first_prompt="long story")
    ids = repo.begin_turn(session=session, owner="alice", conversation_id=conv.id, content="long story")
    assert repo.save_partial(session=session, owner="alice", message_id=ids.assistant_message_id, content="Once upon")
    assert not repo.save_partial(session=session, owner="bob", message_id=ids.assistant_message_id, content="pwned")
    assert repo.mark_interrupted(session=session, grace=timedelta(0)) == 1
    reply = repo.get_conversation(session=session, owner="alice", conversation_id=conv.id).messages[-1]
    assert (reply.content, reply.finish_reason) == ("Once upon", "interrupted")

    ids2 = repo.begin_turn(session=session, owner="alice", conversation_id=conv.id, content="again")
    repo.finish_turn(session=session, owner="alice", message_id=ids2.assistant_message_id, content="The end.", finish_reason="stop")
    assert not repo.save_partial(session=session, owner="alice", message_id=ids2.assistant_message_id, content="late")
    assert repo.get_conversation(session=session, owner="alice", conversation_id=conv.id).messages[-1].content == "The end."
