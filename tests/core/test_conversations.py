"""The conversations use case (core.conversations.Conversations) without Gradio: real storage (SQLite, and
PostgreSQL when TEST_DATABASE_URL is set), the app's own Services, export files in a temporary folder."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from core.conversations import NO_CONVERSATION, ConversationError, Conversations
from core.exports import ExportFiles
from core.services import Services
from core.store import start_turn
from storage import repository as repo

ALICE = "user:alice"
BOB = "user:bob"


@pytest.fixture
def conversations(services: Services, tmp_path: Path) -> Conversations:
    return Conversations(services, ExportFiles(tmp_path / "exports", timers=False))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def add_turn(engine: sa.Engine, owner: str, conversation_id: str | None, shown: list[str], prompt: str) -> str:
    """One saved user message and its finished reply; returns the conversation's id."""
    with Session(engine) as session:
        ids = start_turn(session=session, owner=owner, conversation_id=conversation_id, history_user_texts=shown,
                         content=prompt, provider="demo", model="parley-demo", system_prompt="Be brief.",
                         params={"temperature": 0.3, "seed": 7, "effort": "low"})
        repo.finish_turn(session=session, owner=owner, message_id=ids.assistant_message_id, content=f"re: {prompt}",
                         finish_reason="stop", provider="demo", model="parley-demo")
        return str(ids.conversation_id)


def snapshot(engine: sa.Engine) -> list[tuple[Any, ...]]:
    """Every conversation and message row, to show that a refused call changed nothing."""
    with engine.connect() as c:
        convs = c.execute(sa.text("SELECT id, owner, title, pinned FROM conversation ORDER BY id")).all()
        msgs = c.execute(sa.text("SELECT id, owner, content, feedback FROM message ORDER BY id")).all()
    return [tuple(r) for r in convs] + [tuple(r) for r in msgs]


def test_list_search_open_rename_pin_delete_for_one_owner(conversations: Conversations, engine: sa.Engine) -> None:
    trip = add_turn(engine, ALICE, None, [], "plan a trip to Lisbon")
    add_turn(engine, ALICE, trip, ["plan a trip to Lisbon"], "and the trams")
    soup = add_turn(engine, ALICE, None, [], "a soup recipe")

    listing = run(conversations.listing(ALICE))
    assert listing.query == "" and listing.hits == []
    assert [e.id for e in listing.entries] == [soup, trip], "newest first"

    found = run(conversations.listing(ALICE, "  trams "))
    assert found.query == "trams" and [e.id for e in found.entries] == [trip]
    assert found.hits and all(str(h.conversation_id) == trip for h in found.hits)
    assert run(conversations.listing(ALICE, None)).query == "", "a query that is not text lists everything"
    # A lone surrogate is searched as U+FFFD, not an error.
    assert run(conversations.listing(ALICE, "\ud800")).query == "\ufffd"

    opened = run(conversations.open(ALICE, trip))
    assert opened.id == trip and [m.content for m in opened.messages] == [
        "plan a trip to Lisbon", "re: plan a trip to Lisbon", "and the trams", "re: and the trams"]
    assert (opened.model, opened.system_prompt, opened.temperature, opened.seed, opened.effort) == (
        "demo:parley-demo", "Be brief.", 0.3, 7, "low")

    renamed = run(conversations.rename(ALICE, trip, "Lisbon \ud800 trip"))
    assert renamed.title == "Lisbon \ufffd trip"

    pinned = run(conversations.toggle_pin(ALICE, trip))
    assert pinned.pinned
    assert [(e.id, e.pinned) for e in run(conversations.listing(ALICE)).entries] == [(trip, True), (soup, False)]
    assert not run(conversations.toggle_pin(ALICE, trip)).pinned

    run(conversations.delete(ALICE, soup))
    assert [e.id for e in run(conversations.listing(ALICE)).entries] == [trip]
    with pytest.raises(ConversationError):
        run(conversations.open(ALICE, soup))


def test_export_then_import_round_trip(conversations: Conversations, engine: sa.Engine) -> None:
    trip = add_turn(engine, ALICE, None, [], "plan a trip to Lisbon")
    run(conversations.rename(ALICE, trip, "Lisbon / trip!"))
    add_turn(engine, ALICE, None, [], "a soup recipe")

    one = run(conversations.export(ALICE, trip, "json"))
    assert one.name == "Lisbon--trip.json" and one.is_relative_to(conversations.exports.root)
    assert [c["title"] for c in json.loads(one.read_text())["conversations"]] == ["Lisbon / trip!"]
    markdown = run(conversations.export(ALICE, trip, "md"))
    assert markdown.suffix == ".md" and "plan a trip to Lisbon" in markdown.read_text()

    everything = run(conversations.export(ALICE, None, "json"))
    assert everything.name == "parley-all-conversations.json"
    assert len(json.loads(everything.read_text())["conversations"]) == 2

    # Bob imports Alice's file: new conversations of his own, Alice's untouched.
    created = run(conversations.import_file(BOB, everything))
    assert len(created) == 2 and not {trip} & set(created)
    assert sorted(e.title for e in run(conversations.listing(BOB)).entries) == ["Lisbon / trip!", "a soup recipe"]
    assert len(run(conversations.listing(ALICE)).entries) == 2

    with pytest.raises(ConversationError, match="Unknown export format"):
        run(conversations.export(ALICE, trip, "pdf"))


def test_a_bad_import_says_why_and_saves_nothing(conversations: Conversations, engine: sa.Engine, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"conversations": "nope"}')
    before = snapshot(engine)
    with pytest.raises(ConversationError, match="^Import failed, nothing was saved: "):
        run(conversations.import_file(ALICE, bad))
    with pytest.raises(ConversationError, match="^Import failed, nothing was saved: "):
        run(conversations.import_file(ALICE, tmp_path / "missing.json"))
    conversations.s.config.max_import_mb = 4 / (1024 * 1024)  # MAX_IMPORT_MB: 4 bytes
    with pytest.raises(ConversationError, match="larger than"):
        run(conversations.import_file(ALICE, bad))
    assert snapshot(engine) == before


def test_another_owners_conversation_is_refused_and_unchanged(conversations: Conversations, engine: sa.Engine) -> None:
    trip = add_turn(engine, ALICE, None, [], "plan a trip to Lisbon")
    before = snapshot(engine)

    assert run(conversations.listing(BOB)).entries == []
    assert run(conversations.listing(BOB, "Lisbon")).entries == []
    for call in (conversations.open(BOB, trip), conversations.rename(BOB, trip, "pwned"),
                 conversations.toggle_pin(BOB, trip), conversations.delete(BOB, trip),
                 conversations.export(BOB, trip, "json")):
        with pytest.raises(ConversationError) as refused:
            run(call)
        assert "Lisbon" not in refused.value.message
    # Undo and feedback on someone else's conversation do nothing (as for a conversation that is gone).
    assert run(conversations.undo(BOB, trip, [], "plan a trip to Lisbon")) == 0
    assert run(conversations.feedback(BOB, trip, 1, "dislike")) is False
    assert snapshot(engine) == before


def test_bad_titles_and_missing_ids_are_refused_with_a_message(conversations: Conversations, engine: sa.Engine) -> None:
    trip = add_turn(engine, ALICE, None, [], "plan a trip to Lisbon")
    before = snapshot(engine)
    cases = [("   ", "Not renamed: The title cannot be empty."), (None, "Not renamed: the title must be text.")]
    for title, message in cases:
        with pytest.raises(ConversationError) as refused:
            run(conversations.rename(ALICE, trip, title))
        assert refused.value.message == message
    with pytest.raises(ConversationError) as too_long:
        run(conversations.rename(ALICE, trip, "x" * 500))
    assert too_long.value.message.startswith("Not renamed: The title is 500 characters long")
    for call in (conversations.open(ALICE, None), conversations.rename(ALICE, "", "t"),
                 conversations.toggle_pin(ALICE, None), conversations.delete(ALICE, None)):
        with pytest.raises(ConversationError) as refused:
            run(call)
        assert refused.value.message == NO_CONVERSATION
    assert snapshot(engine) == before


def test_undo_and_feedback(conversations: Conversations, engine: sa.Engine) -> None:
    trip = add_turn(engine, ALICE, None, [], "one")
    add_turn(engine, ALICE, trip, ["one"], "two")

    assert run(conversations.feedback(ALICE, trip, 2, "like")) is True
    assert [m.feedback for m in run(conversations.open(ALICE, trip)).messages if m.role == "assistant"] == [None, "like"]
    assert run(conversations.feedback(ALICE, trip, 3, "like")) is False, "no third reply"
    assert run(conversations.feedback(ALICE, trip, 2, None)) is True

    assert run(conversations.undo(ALICE, trip, ["stale"], "two")) == 0, "a chat that does not match removes nothing"
    assert run(conversations.undo(ALICE, trip, ["one"], "two")) == 2
    assert [m.content for m in run(conversations.open(ALICE, trip)).messages] == ["one", "re: one"]
    assert run(conversations.undo(ALICE, None, [], "one")) == 0


def test_a_first_turn_that_cannot_be_saved_leaves_no_empty_conversation(engine):
    """A new chat's conversation and its first turn are one transaction: when the turn is refused (here a message
    over the store's limit), there is no "New chat" left behind with nothing in it."""
    from storage.errors import InvalidInput
    from storage.models import MAX_CONTENT_CHARS

    with Session(engine) as session, pytest.raises(InvalidInput):
        start_turn(session=session, owner="ann", conversation_id=None, history_user_texts=[],
                   content="x" * (MAX_CONTENT_CHARS + 1), provider="openai", model="m", system_prompt="", params={})
    with Session(engine) as session:
        assert repo.list_conversations(session=session, owner="ann") == []
    assert add_turn(engine, "ann", None, [], "hello")  # and the next first turn is saved as usual
    with Session(engine) as session:
        [conv] = repo.list_conversations(session=session, owner="ann")
        assert conv.title == "hello"
