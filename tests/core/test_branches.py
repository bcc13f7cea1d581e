"""The branches of a conversation through the core use cases (issue 15): switch, fork and delete a branch refuse
what they must and say why; a turn placed by id (the API's `/send`) refuses a place that cannot take it; the
files sent with a turn are those of the path shown. Real storage: SQLite, and PostgreSQL when TEST_DATABASE_URL
is set; the offline demo provider."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from core.branching import NO_CONVERSATION, NOT_IN_IT, NOT_YOURS, RETRY_TEXT, context_of
from core.chat import ChatTurns, Refused, Update
from core.conversations import NOT_A_MESSAGE, ConversationError, Conversations
from core.exports import ExportFiles
from core.ratelimit import Identity
from core.services import Services
from core.store import FLAGGED_ERROR, history_files, start_turn
from storage import repository as repo
from storage.attachments import AttachmentIn
from storage.models import MessagePublic

ALICE = "user:alice"
BOB = "user:bob"
MODEL = "demo:parley-demo"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture
def conversations(services: Services, tmp_path: Path) -> Conversations:
    return Conversations(services, ExportFiles(tmp_path / "exports", timers=False))


def add_turn(engine: sa.Engine, owner: str, conversation_id: str | None, shown: list[str], prompt: str,
             files: list[AttachmentIn] | None = None) -> str:
    with Session(engine) as session:
        ids = start_turn(session=session, owner=owner, conversation_id=conversation_id, history_user_texts=shown,
                         content=prompt, provider="demo", model="parley-demo", system_prompt="", params={},
                         attachments=files or [])
        repo.finish_turn(session=session, owner=owner, message_id=ids.assistant_message_id, content=f"re: {prompt}",
                         finish_reason="stop")
        return str(ids.conversation_id)


def snapshot(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as c:
        convs = c.execute(sa.text("SELECT id, owner, title, current_leaf_id FROM conversation ORDER BY id")).all()
        msgs = c.execute(sa.text("SELECT id, parent_id, content FROM message ORDER BY id")).all()
    return [tuple(r) for r in convs] + [tuple(r) for r in msgs]


def test_switch_fork_and_delete_branch_refuse_bad_or_foreign_ids_and_change_nothing(conversations: Conversations, engine):
    trip = add_turn(engine, ALICE, None, [], "one")
    add_turn(engine, ALICE, trip, [], "uno")  # a second version of the first message
    other = add_turn(engine, ALICE, None, [], "elsewhere")
    bobs = add_turn(engine, BOB, None, [], "bob's")
    bob_message = str(run(conversations.open(BOB, bobs)).messages[0].id)
    other_message = str(run(conversations.open(ALICE, other)).messages[0].id)
    before = snapshot(engine)
    for use_case in (conversations.switch, conversations.fork, conversations.delete_branch):
        for conv, message, said in [
            (trip, "not-an-id", "is not a message id"),
            (trip, "x" * 5000, "is not a message id"),
            (trip, "", "Choose a message first"),
            (trip, None, "Choose a message first"),
            (None, other_message, "Open a conversation first"),
            (trip, bob_message, NOT_A_MESSAGE),  # another owner's message
            (bobs, bob_message, NOT_A_MESSAGE),  # another owner's conversation
            (trip, other_message, NOT_A_MESSAGE if use_case != conversations.switch else ""),  # another conversation's
            (trip, str(uuid.uuid4()), NOT_A_MESSAGE),
        ]:
            with pytest.raises(ConversationError) as refused:
                run(use_case(ALICE, conv, message))
            assert said in refused.value.message, (use_case.__name__, message, refused.value.message)
    assert snapshot(engine) == before, "a refused branch action changes nothing"


def test_switch_fork_and_delete_branch_return_what_the_chat_shows(conversations: Conversations, engine):
    trip = add_turn(engine, ALICE, None, [], "one")
    add_turn(engine, ALICE, trip, ["one"], "two")
    add_turn(engine, ALICE, trip, ["one"], "two, edited")
    shown = run(conversations.open(ALICE, trip))
    first_two, edited = shown.versions[shown.messages[2].id]
    assert [m.content for m in shown.messages] == ["one", "re: one", "two, edited", "re: two, edited"]
    assert shown.current_leaf_id == shown.messages[-1].id and shown.other_messages == 2

    back = run(conversations.switch(ALICE, trip, str(first_two)))
    assert [m.content for m in back.messages] == ["one", "re: one", "two", "re: two"]
    assert back.versions[first_two] == [first_two, edited]

    fork = run(conversations.fork(ALICE, trip, str(back.messages[1].id)))
    assert fork.id != trip and [m.content for m in fork.messages] == ["one", "re: one"]
    assert fork.title.endswith("(branch)") and fork.versions == {}

    left = run(conversations.delete_branch(ALICE, trip, str(first_two)))
    assert [m.content for m in left.messages] == ["one", "re: one", "two, edited", "re: two, edited"]
    assert left.versions == {} and left.other_messages == 0


async def _send(turns: ChatTurns, owner: str, text: str, **kwargs: Any) -> list[Any]:
    async with aclosing(turns.send(owner=owner, identity=Identity(owner), text=text, model=MODEL, **kwargs)) as events:
        return [e async for e in events]


def test_a_turn_placed_by_id_refuses_a_place_that_cannot_take_it_and_sends_and_saves_nothing(services, engine):
    trip = add_turn(engine, ALICE, None, [], "one")
    other = add_turn(engine, ALICE, None, [], "elsewhere")
    bobs = add_turn(engine, BOB, None, [], "bob's")
    with Session(engine) as s:
        user, reply = repo.get_conversation(session=s, owner=ALICE, conversation_id=trip).messages
        elsewhere = repo.get_conversation(session=s, owner=ALICE, conversation_id=other).messages[0]
    turns = ChatTurns(services)
    before = snapshot(engine)
    for conv, parent, text, said in [
        (None, str(reply.id), "hi", NO_CONVERSATION),
        (bobs, "", "hi", NOT_YOURS),
        ("not-an-id", "", "hi", "is not a valid id"),
        (trip, str(elsewhere.id), "hi", NOT_IN_IT),
        (trip, str(uuid.uuid4()), "hi", NOT_IN_IT),
        (trip, "zzz", "hi", "is not a valid id"),
        (trip, str(user.id), "something else", RETRY_TEXT),
        (trip, str(reply.id), "  ", "Type a message first"),
    ]:
        (event,) = run(_send(turns, ALICE, text, conversation_id=conv, parent_id=parent))
        assert isinstance(event, Refused) and said in event.message, (conv, parent, event)
    assert snapshot(engine) == before, "a refused turn stores nothing"


def test_a_retry_placed_by_id_answers_the_stored_message_and_stores_no_other(services, engine):
    trip = add_turn(engine, ALICE, None, [], "one")
    with Session(engine) as s:
        user = repo.get_conversation(session=s, owner=ALICE, conversation_id=trip).messages[0]
    events = run(_send(ChatTurns(services), ALICE, "", conversation_id=trip, parent_id=str(user.id)))
    last = events[-1]
    assert isinstance(last, Update) and last.saved is not None
    assert last.saved.user_message_id is None and last.saved.parent_id == user.id
    with Session(engine) as s:
        detail = repo.get_conversation(session=s, owner=ALICE, conversation_id=trip)
    assert [m.role for m in detail.messages] == ["user", "assistant"] and detail.other_messages == 1
    assert detail.messages[-1].id == last.saved.assistant_message_id


def _message(role: str, content: str, parent: MessagePublic | None = None, error: str | None = None) -> MessagePublic:
    return MessagePublic(id=uuid.uuid4(), conversation_id=uuid.uuid4(), parent_id=parent.id if parent else None, role=role,
                         content=content, error=error, position=0)


def test_the_context_of_a_stored_path_leaves_out_flagged_turns_and_failed_replies():
    one = _message("user", "one")
    re_one = _message("assistant", "re one", one)
    bad = _message("user", "flagged text", re_one)
    refusal = _message("assistant", "I can't help", bad, error=f"{FLAGGED_ERROR}: violence")
    two = _message("user", "two", refusal)
    failed = _message("assistant", "", two, error="timeout")
    context, users = context_of([one, re_one, bad, refusal, two, failed])
    assert [(m.role, m.content) for m in context] == [("user", "one"), ("assistant", "re one"), ("user", "two")]
    assert users == [one, two]


NOTE_A = AttachmentIn(name="a.txt", mime="text/plain", data=b"file of the first version", text="file of the first version")
NOTE_B = AttachmentIn(name="b.txt", mime="text/plain", data=b"file of the second version", text="file of the second version")


def test_the_files_sent_again_are_those_of_the_path_shown(engine):
    trip = add_turn(engine, ALICE, None, [], "one", [NOTE_A])
    add_turn(engine, ALICE, trip, [], "uno", [NOTE_B])  # Edit of the first message, with another file
    with Session(engine) as s:
        shown = history_files(session=s, owner=ALICE, conversation_id=trip, history_user_texts=["uno"])
        assert [[f.name for f in files] for files in shown] == [["b.txt"]]
        assert history_files(session=s, owner=ALICE, conversation_id=trip, history_user_texts=["one"]) == [], \
            "the other version's text does not match the path shown"
