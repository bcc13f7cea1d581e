"""The pieces under the chat turn's seams: refusal marks in a chat history, and the queue of kept turns."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlmodel import Session

from core.pending_writes import KeptTurn, PendingWrites
from core.store import start_turn, undo_turn
from storage import repository as repo
from storage.db import init_db, make_engine
from storage.errors import InvalidInput, StorageUnavailable
from tests.storage.conftest import pg_schema_engine
from ui.convert import FLAGGED_MARK, REFUSED_MARK, refusal_id, stored_to_chatbot, to_messages, user_texts, user_turns

OWNER = "anon-" + "u" * 22

# -- refusal marks --------------------------------------------------------------------------------


def test_refused_turns_are_left_out_of_the_context_and_of_the_store_comparison():
    refused = {"role": "assistant", "content": "too long", "metadata": {"title": "⚠️ too long", "id": refusal_id(REFUSED_MARK)}}
    flagged = {"role": "assistant", "content": "flagged", "metadata": {"title": "⚠️ flagged", "id": refusal_id(FLAGGED_MARK)}}
    history = [
        {"role": "user", "content": [{"type": "text", "text": "one"}]},  # the browser's shape
        {"role": "assistant", "content": "re: one"},
        {"role": "user", "content": "never sent"},
        refused,
        {"role": "user", "content": "stored but flagged"},
        flagged,
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "re: two"},
    ]
    assert [(m.role, m.content) for m in to_messages(history, "three")] == [
        ("user", "one"), ("assistant", "re: one"), ("user", "two"), ("assistant", "re: two"), ("user", "three")]
    assert user_texts(history) == ["one", "stored but flagged", "two"], "the store holds the flagged message, not the refused one"
    assert user_turns(history) == 3


def test_a_reopened_conversation_marks_its_flagged_turn_so_it_is_not_sent():
    rows = [
        {"role": "user", "content": "FLAGME"},
        {"role": "assistant", "content": "I can't help with that message.", "provider": "openai", "model": "gpt-test",
         "finish_reason": "content_filter", "error": "flagged by moderation: harassment"},
        {"role": "user", "content": "fine"},
        {"role": "assistant", "content": "a reply", "provider": "openai", "model": "gpt-test", "finish_reason": "stop"},
    ]
    chat = stored_to_chatbot(rows)
    assert [(m.role, m.content) for m in to_messages(chat, "next")] == [
        ("user", "fine"), ("assistant", "a reply"), ("user", "next")]
    assert user_texts(chat) == ["FLAGME", "fine"]


# -- undo -----------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def session(request: pytest.FixtureRequest, tmp_path):
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'undo.db'}")
        init_db(engine)
        with Session(engine) as s:
            yield s
        engine.dispose()
        return
    with pg_schema_engine() as engine:
        init_db(engine)
        with Session(engine) as s:
            yield s


def _turn(session, conv, shown, text):
    ids = start_turn(session=session, owner=OWNER, conversation_id=conv, history_user_texts=shown, content=text,
                     provider="demo", model="parley-demo", system_prompt="", params={})
    repo.finish_turn(session=session, owner=OWNER, message_id=ids.assistant_message_id, content=f"re: {text}", finish_reason="stop")
    return str(ids.conversation_id)


def _users(session, conv):
    return [m.content for m in repo.get_conversation(session=session, owner=OWNER, conversation_id=conv).messages if m.role == "user"]


def test_undo_of_a_refused_message_leaves_the_stored_turns_alone(session):
    conv = _turn(session, None, [], "one")
    _turn(session, conv, ["one"], "two")
    # The refused "three" was never stored: undoing it (the chat showed one, two before it) removes nothing.
    assert undo_turn(session=session, owner=OWNER, conversation_id=conv, kept_user_texts=["one", "two"], undone="three") == 0
    assert _users(session, conv) == ["one", "two"]
    # A stale chat removes nothing either.
    assert undo_turn(session=session, owner=OWNER, conversation_id=conv, kept_user_texts=["stale"], undone="two") == 0
    # Undo of the stored "two" takes it and its reply off the path shown (they stay stored, as another version).
    assert undo_turn(session=session, owner=OWNER, conversation_id=conv, kept_user_texts=["one"], undone="two") == 2
    assert _users(session, conv) == ["one"]


# -- the queue itself -----------------------------------------------------------------------------


class FakeDb:
    """Stands in for Services.db: records writes, and is down while `down` is set."""

    def __init__(self):
        self.down = False
        self.refuse: set[str] = set()
        self.written: list[tuple[str, str]] = []

    async def __call__(self, fn, **kwargs):
        if self.down:
            raise StorageUnavailable("down")
        content = kwargs.get("content", "")
        if content in self.refuse:
            raise InvalidInput("refused")
        self.written.append((fn.__name__, content))

        class Ids:
            assistant_message_id = f"m-{len(self.written)}"
            conversation_id = "c-1"

        return Ids()


def kept(owner: str, content: str) -> KeptTurn:
    return KeptTurn(owner=owner, conversation_id="c-1", shown=(), content=content, begin={}, finish={"content": "re: " + content})


async def test_the_queue_is_bounded_drops_the_oldest_with_a_warning_and_counts_it_for_its_owner(caplog):
    db = FakeDb()
    db.down = True
    pending = PendingWrites(db, limit=2, first_delay=3600)
    caplog.set_level(logging.WARNING, logger="parley.pending")
    for owner, text in [("alice", "a1"), ("bob", "b1"), ("alice", "a2")]:
        pending.keep(kept(owner, text))
    assert len(pending) == 2
    assert "dropped" in caplog.text and "a1" not in caplog.text, "warned, without the message text"
    assert pending.take_dropped("alice") == 1 and pending.take_dropped("alice") == 0 and pending.take_dropped("bob") == 0
    assert not await pending.flush("alice"), "still down: nothing written"
    db.down = False
    assert await pending.flush("alice")
    assert [c for _, c in db.written] == ["a2", "re: a2"], "only this owner's turn, whole"
    assert pending.has("bob") and not pending.has("alice")


async def test_the_queue_writes_in_order_and_drops_a_turn_the_database_refuses_for_good():
    db = FakeDb()
    db.refuse = {"x2"}
    pending = PendingWrites(db, first_delay=3600)
    db.down = True
    for text in ("x1", "x2", "x3"):
        pending.keep(kept("carol", text))
    db.down = False
    assert await pending.flush("carol")
    assert [c for _, c in db.written] == ["x1", "re: x1", "x3", "re: x3"]
    assert pending.take_dropped("carol") == 1, "the user is told about the turn that could not be kept"


async def test_the_retry_loop_writes_kept_turns_once_the_database_is_back():
    db = FakeDb()
    db.down = True
    pending = PendingWrites(db, first_delay=0.01, max_delay=0.05)
    pending.keep(kept("dave", "d1"))
    await asyncio.sleep(0.05)  # a few failed retries (this is no timing assertion: the loop is polled below)
    assert len(pending) == 1 and db.written == []
    db.down = False
    for _ in range(500):
        if not len(pending):
            break
        await asyncio.sleep(0.01)
    assert len(pending) == 0 and [c for _, c in db.written] == ["d1", "re: d1"]
