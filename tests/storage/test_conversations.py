"""Creating, listing, opening, renaming, pinning, archiving and deleting conversations."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from storage import repository as repo
from storage.errors import InvalidInput, NotFound
from storage.models import AUTO_TITLE_MAX, DEFAULT_TITLE, TITLE_MAX
from tests.storage.helpers import add_turn, chat


def test_create_and_open(session):
    created = repo.create_conversation(
        session=session, owner="alice", title="Plans", model="demo:echo",
        system_prompt="Be brief.", params={"temperature": 0.2},
    )  # fmt: skip
    opened = repo.get_conversation(session=session, owner="alice", conversation_id=created.id)
    assert opened.conversation == created
    assert opened.conversation.title == "Plans"
    assert opened.conversation.params == {"temperature": 0.2}
    assert opened.conversation.system_prompt == "Be brief."
    assert opened.messages == []
    assert created.created_at.tzinfo is not None and created.created_at.utcoffset().total_seconds() == 0


def test_open_accepts_id_as_text(session):
    created = repo.create_conversation(session=session, owner="alice")
    opened = repo.get_conversation(session=session, owner="alice", conversation_id=str(created.id))
    assert opened.conversation.id == created.id


def test_title_comes_from_first_prompt(session):
    conversation = repo.create_conversation(session=session, owner="alice")
    assert conversation.title == DEFAULT_TITLE
    add_turn(session, "alice", conversation.id, "  How do\nI boil   an egg?  ", "Ten minutes.")
    add_turn(session, "alice", conversation.id, "And a duck egg?", "Longer.")
    opened = repo.get_conversation(session=session, owner="alice", conversation_id=conversation.id)
    assert opened.conversation.title == "How do I boil an egg?"


def test_auto_title_is_cut_on_a_word(session):
    prompt = "word " * 100
    conversation = repo.create_conversation(session=session, owner="alice", first_prompt=prompt)
    assert len(conversation.title) <= AUTO_TITLE_MAX
    assert conversation.title.endswith("word…")


def test_renamed_title_is_kept_by_first_prompt(session):
    conversation = repo.create_conversation(session=session, owner="alice", title="Mine")
    add_turn(session, "alice", conversation.id, "Something else", "ok")
    assert repo.get_conversation(session=session, owner="alice", conversation_id=conversation.id).conversation.title == "Mine"


def test_rename(session):
    conversation = repo.create_conversation(session=session, owner="alice")
    renamed = repo.rename_conversation(session=session, owner="alice", conversation_id=conversation.id, title=" Trip\n2025 ")
    assert renamed.title == "Trip 2025"
    assert repo.list_conversations(session=session, owner="alice")[0].title == "Trip 2025"


@pytest.mark.parametrize("title", ["", "   ", "x" * (TITLE_MAX + 1), None, 42])
def test_rename_refuses_bad_titles(session, title):
    conversation = repo.create_conversation(session=session, owner="alice", title="Keep")
    with pytest.raises(InvalidInput):
        repo.rename_conversation(session=session, owner="alice", conversation_id=conversation.id, title=title)
    assert repo.get_conversation(session=session, owner="alice", conversation_id=conversation.id).conversation.title == "Keep"


def test_rename_accepts_the_longest_title(session):
    conversation = repo.create_conversation(session=session, owner="alice")
    renamed = repo.rename_conversation(session=session, owner="alice", conversation_id=conversation.id, title="é" * TITLE_MAX)
    assert renamed.title == "é" * TITLE_MAX


def test_create_refuses_a_long_explicit_title(session, count_rows):
    with pytest.raises(InvalidInput):
        repo.create_conversation(session=session, owner="alice", title="x" * (TITLE_MAX + 1))
    assert count_rows() == (0, 0)


@pytest.mark.parametrize("owner", ["", "  ", "x" * 256, None, "a\x00b"])
def test_bad_owner(session, owner):
    with pytest.raises(InvalidInput):
        repo.create_conversation(session=session, owner=owner)


# The last is well-formed and never stored; a fixed value, since every xdist worker must collect the same test ids.
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "", "'; DROP TABLE conversation; --", 12, None, "5a1e3c53-1b7e-4d2b-9c7e-0f4a2d6b8e11"])
def test_unknown_or_malformed_ids_are_not_found(session, bad_id):
    repo.create_conversation(session=session, owner="alice")
    for call in (
        lambda: repo.get_conversation(session=session, owner="alice", conversation_id=bad_id),
        lambda: repo.rename_conversation(session=session, owner="alice", conversation_id=bad_id, title="x"),
        lambda: repo.delete_conversation(session=session, owner="alice", conversation_id=bad_id),
        lambda: repo.begin_turn(session=session, owner="alice", conversation_id=bad_id, content="hi"),
        lambda: repo.set_feedback(session=session, owner="alice", message_id=bad_id, feedback="like"),
    ):
        with pytest.raises(NotFound):
            call()
    assert len(repo.list_conversations(session=session, owner="alice")) == 1


def test_list_newest_first_pinned_first_archived_hidden(session):
    first, _ = chat(session, "alice", [("one", "1")])
    second, _ = chat(session, "alice", [("two", "2")])
    third, _ = chat(session, "alice", [("three", "3")])
    ids = lambda **kw: [c.id for c in repo.list_conversations(session=session, owner="alice", **kw)]  # noqa: E731
    assert ids() == [third, second, first]
    add_turn(session, "alice", first, "again", "1 again")  # activity moves it to the top
    assert ids() == [first, third, second]
    repo.set_pinned(session=session, owner="alice", conversation_id=second, pinned=True)
    assert ids() == [second, first, third]
    repo.set_archived(session=session, owner="alice", conversation_id=first, archived=True)
    assert ids() == [second, third]
    assert ids(archived=True) == [first]
    assert set(ids(archived=None)) == {first, second, third}
    repo.set_archived(session=session, owner="alice", conversation_id=first, archived=False)
    repo.set_pinned(session=session, owner="alice", conversation_id=second, pinned=False)
    assert ids() == [first, third, second]


def test_paging(session):
    made = [repo.create_conversation(session=session, owner="alice", title=f"c{i}").id for i in range(7)]
    newest_first = list(reversed(made))
    pages = [repo.list_conversations(session=session, owner="alice", limit=3, offset=o) for o in (0, 3, 6, 9)]
    assert [[c.id for c in p] for p in pages] == [newest_first[0:3], newest_first[3:6], newest_first[6:7], []]


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"limit": 501}, {"offset": -1}, {"limit": "10"}])
def test_paging_bounds(session, kwargs):
    with pytest.raises(InvalidInput):
        repo.list_conversations(session=session, owner="alice", **kwargs)


def test_pin_and_archive_need_booleans(session):
    conversation = repo.create_conversation(session=session, owner="alice")
    with pytest.raises(InvalidInput):
        repo.set_pinned(session=session, owner="alice", conversation_id=conversation.id, pinned="yes")


def test_delete_cascades_to_messages(session, engine, count_rows):
    keep, _ = chat(session, "alice", [("keep me", "kept")])
    gone, _ = chat(session, "alice", [("delete me", "deleted"), ("more", "more")])
    assert count_rows() == (2, 6)
    repo.delete_conversation(session=session, owner="alice", conversation_id=gone)
    assert count_rows() == (1, 2)
    with pytest.raises(NotFound):
        repo.get_conversation(session=session, owner="alice", conversation_id=gone)
    with pytest.raises(NotFound):
        repo.delete_conversation(session=session, owner="alice", conversation_id=gone)
    assert [h.conversation_id for h in repo.search_messages(session=session, owner="alice", query="delete")] == []
    assert len(repo.get_conversation(session=session, owner="alice", conversation_id=keep).messages) == 2


def test_database_cascade_without_the_repository(session, engine, count_rows):
    """The foreign key itself cascades (SQLite needs foreign_keys=ON for this)."""
    conversation, _ = chat(session, "alice", [("a", "b")])
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM conversation"))
    assert count_rows() == (0, 0)


def test_session_stays_usable_after_an_error(session):
    with pytest.raises(NotFound):
        repo.get_conversation(session=session, owner="alice", conversation_id=uuid.uuid4())
    assert repo.create_conversation(session=session, owner="alice").title == DEFAULT_TITLE
