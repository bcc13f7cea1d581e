"""What the chat shows and what is stored stay in step (Retry, Undo, Edit), and nothing stored is lost on a mismatch."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from core.store import start_turn
from storage import repository as repo
from storage.db import init_db, make_engine

OWNER = "anon-" + "x" * 22


@pytest.fixture
def session(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    init_db(engine)
    with Session(engine) as s:
        yield s
    engine.dispose()


def turn(session, conv, shown, text):
    ids = start_turn(session=session, owner=OWNER, conversation_id=conv, history_user_texts=shown, content=text,
                     provider="demo", model="parley-demo", system_prompt="", params={})
    repo.finish_turn(session=session, owner=OWNER, message_id=ids.assistant_message_id, content=f"re: {text}", finish_reason="stop")
    return str(ids.conversation_id)


def stored(session, conv):
    return [(m.role, m.content) for m in repo.get_conversation(session=session, owner=OWNER, conversation_id=conv).messages]


def test_follow_ups_append(session):
    conv = turn(session, None, [], "one")
    assert turn(session, conv, ["one"], "two") == conv
    assert [c for _, c in stored(session, conv)] == ["one", "re: one", "two", "re: two"]


def test_retry_and_edit_replace_the_later_turns(session):
    conv = turn(session, None, [], "one")
    turn(session, conv, ["one"], "two")
    assert turn(session, conv, ["one"], "two") == conv  # Retry of the last turn
    assert [c for _, c in stored(session, conv)] == ["one", "re: one", "two", "re: two"]
    assert turn(session, conv, ["one"], "two, edited") == conv  # Edit of the last user message
    assert [c for _, c in stored(session, conv)] == ["one", "re: one", "two, edited", "re: two, edited"]
    assert turn(session, conv, [], "one") == conv  # Retry of the first turn
    assert [c for _, c in stored(session, conv)] == ["one", "re: one"]


def test_a_chat_that_does_not_match_the_store_starts_a_new_conversation(session):
    conv = turn(session, None, [], "one")
    turn(session, conv, ["one"], "two")
    other = turn(session, conv, [], "something else entirely")  # lost history: not a retry
    assert other != conv
    other2 = turn(session, conv, ["not what was stored"], "three")  # a stale page
    assert other2 not in (conv, other)
    assert [c for _, c in stored(session, conv)] == ["one", "re: one", "two", "re: two"], "nothing stored was lost"


def test_a_deleted_conversation_starts_a_new_one(session):
    conv = turn(session, None, [], "one")
    repo.delete_conversation(session=session, owner=OWNER, conversation_id=conv)
    assert turn(session, conv, ["one"], "two") != conv


def test_undo_removes_the_last_turn_only_when_the_store_matches(session):
    from core.store import undo_last_turn

    conv = turn(session, None, [], "one")
    turn(session, conv, ["one"], "two")
    assert undo_last_turn(session=session, owner=OWNER, conversation_id=conv, history_user_texts=["stale"]) == 0
    assert undo_last_turn(session=session, owner=OWNER, conversation_id=conv, history_user_texts=["one", "two"]) == 2
    assert [c for _, c in stored(session, conv)] == ["one", "re: one"]


def test_undo_accepts_a_chat_already_popped(session):
    from core.store import undo_last_turn

    conv = turn(session, None, [], "one")
    turn(session, conv, ["one"], "two")
    assert undo_last_turn(session=session, owner=OWNER, conversation_id=conv, history_user_texts=["one"]) == 2
    assert [c for _, c in stored(session, conv)] == ["one", "re: one"]
