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


def everything(session, conv):
    """Every stored message of the conversation (all versions), oldest first: (role, content)."""
    import uuid

    tree = repo.tree_of(session=session, owner=OWNER, conversation_ids=[uuid.UUID(conv)])
    return [(m.role, m.content) for messages in tree.values() for m in messages]


def test_retry_and_edit_add_versions_and_keep_the_old_ones(session):
    conv = turn(session, None, [], "one")
    turn(session, conv, ["one"], "two")
    assert turn(session, conv, ["one"], "two") == conv  # Retry of the last turn: a second reply to "two"
    assert [c for _, c in stored(session, conv)] == ["one", "re: one", "two", "re: two"]
    assert [r for r, _ in everything(session, conv)].count("user") == 2, "a Retry stores no user message"
    assert len(everything(session, conv)) == 5
    assert turn(session, conv, ["one"], "two, edited") == conv  # Edit of the last user message: a sibling of "two"
    assert [c for _, c in stored(session, conv)] == ["one", "re: one", "two, edited", "re: two, edited"]
    assert turn(session, conv, [], "one") == conv  # Retry of the first turn
    assert [c for _, c in stored(session, conv)] == ["one", "re: one"]
    # Edit of the first message: a second root in the same conversation (the list keeps highlighting it).
    assert turn(session, conv, [], "first, edited") == conv
    assert [c for _, c in stored(session, conv)] == ["first, edited", "re: first, edited"]
    assert sorted(c for _, c in everything(session, conv)) == sorted(
        ["one", "re: one", "two", "re: two", "re: two", "two, edited", "re: two, edited", "re: one", "first, edited",
         "re: first, edited"]), "every version is kept"


def test_a_retry_and_an_edit_go_under_the_right_parents(session):
    conv = turn(session, None, [], "one")
    turn(session, conv, ["one"], "two")
    before = repo.get_conversation(session=session, owner=OWNER, conversation_id=conv).messages
    ids = start_turn(session=session, owner=OWNER, conversation_id=conv, history_user_texts=["one"], content="two",
                     provider="demo", model="parley-demo", system_prompt="", params={})
    assert ids.user_message_id is None and ids.parent_id == before[2].id, "Retry: a new reply to the stored 'two'"
    ids = start_turn(session=session, owner=OWNER, conversation_id=conv, history_user_texts=["one"], content="2",
                     provider="demo", model="parley-demo", system_prompt="", params={})
    assert ids.parent_id == before[1].id, "Edit: a new user message under the reply 're: one'"
    detail = repo.get_conversation(session=session, owner=OWNER, conversation_id=conv)
    assert detail.current_leaf_id == ids.assistant_message_id
    assert detail.versions[ids.user_message_id] == [before[2].id, ids.user_message_id]


def test_a_chat_that_does_not_match_the_store_starts_a_new_conversation(session):
    conv = turn(session, None, [], "one")
    turn(session, conv, ["one"], "two")
    other = turn(session, conv, ["not what was stored"], "three")  # a stale page
    assert other != conv
    assert [c for _, c in stored(session, conv)] == ["one", "re: one", "two", "re: two"], "nothing stored was changed"
    # A chat showing nothing of a conversation that has turns: a new first message beside the old one
    # (the Edit of the first message); the old turns stay, as the other version.
    assert turn(session, conv, [], "something else entirely") == conv
    assert [c for _, c in stored(session, conv)] == ["something else entirely", "re: something else entirely"]
    assert len(everything(session, conv)) == 6, "nothing stored was lost"


def test_a_deleted_conversation_starts_a_new_one(session):
    conv = turn(session, None, [], "one")
    repo.delete_conversation(session=session, owner=OWNER, conversation_id=conv)
    assert turn(session, conv, ["one"], "two") != conv


def test_undo_moves_the_path_back_only_when_the_store_matches_and_deletes_nothing(session):
    from core.store import undo_last_turn

    conv = turn(session, None, [], "one")
    turn(session, conv, ["one"], "two")
    assert undo_last_turn(session=session, owner=OWNER, conversation_id=conv, history_user_texts=["stale"]) == 0
    assert [c for _, c in stored(session, conv)] == ["one", "re: one", "two", "re: two"]
    assert undo_last_turn(session=session, owner=OWNER, conversation_id=conv, history_user_texts=["one", "two"]) == 2
    assert [c for _, c in stored(session, conv)] == ["one", "re: one"]
    assert len(everything(session, conv)) == 4, "the undone turn stays, as another version"
    assert turn(session, conv, ["one"], "two again") == conv  # the next turn continues the path shown
    assert [c for _, c in stored(session, conv)] == ["one", "re: one", "two again", "re: two again"]


def test_undo_accepts_a_chat_already_popped(session):
    from core.store import undo_last_turn

    conv = turn(session, None, [], "one")
    turn(session, conv, ["one"], "two")
    assert undo_last_turn(session=session, owner=OWNER, conversation_id=conv, history_user_texts=["one"]) == 2
    assert [c for _, c in stored(session, conv)] == ["one", "re: one"]


def test_undo_of_the_first_turn_empties_the_path_and_the_next_message_is_a_new_root(session):
    from core.store import undo_turn

    conv = turn(session, None, [], "one")
    assert undo_turn(session=session, owner=OWNER, conversation_id=conv, kept_user_texts=[], undone="one") == 2
    assert stored(session, conv) == []
    assert turn(session, conv, [], "fresh start") == conv
    detail = repo.get_conversation(session=session, owner=OWNER, conversation_id=conv)
    assert [m.content for m in detail.messages] == ["fresh start", "re: fresh start"]
    assert detail.messages[0].parent_id is None
    assert len(everything(session, conv)) == 4
