"""Long conversations (core.summaries): the older part summarised once, stored, reused, per branch; failures fall back.

Real storage (SQLite, and PostgreSQL when TEST_DATABASE_URL is set), the fake OpenAI server through the real SDK,
and the app's own ChatTurns. The summariser is its own model name on the fake, so its calls are counted apart.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import aclosing

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from chat.registry import Registry, Settings
from chat.turn import Turn
from chat.types import FinishReason, Message
from core import summaries
from core.chat import ChatEvent, ChatTurns, Update
from core.config import AppConfig
from core.ratelimit import Identity
from core.services import Services
from core.summaries import NOTE_FAILED, SUMMARY_HEADER, SummarySettings, read_path
from storage import repository as repo
from tests.apphelpers import app_env
from tests.fakes import Scenario
from tests.storage.helpers import chat

SUMMARY = "The user asked about fruit; the assistant listed apples."


@pytest.fixture
def names(fake_server) -> Iterator[tuple[str, str]]:
    """A chat model and a summariser model of this test's own (the fake is shared by the whole run)."""
    tag = uuid.uuid4().hex[:8]
    chat_model, summariser = f"gpt-test-long-{tag}", f"gpt-test-sum-{tag}"
    fake_server.set_scenario(chat_model, Scenario(text="fine reply", tokens=2))
    fake_server.set_scenario(summariser, Scenario(text=SUMMARY))
    yield chat_model, summariser


def services_for(fake_server, engine: sa.Engine, summariser: str, **env: str) -> Services:
    values = app_env(fake_server, "unused", SUMMARY_MODEL=f"openai:{summariser}", **env)
    return Services.build(AppConfig.from_env(values), Registry.from_settings(Settings.from_env(values)), engine)


@pytest.fixture
def services(fake_server, engine, names) -> Iterator[Services]:
    built = services_for(fake_server, engine, names[1])
    yield built
    built.close()


def long_chat(engine: sa.Engine, who: str, model: str, turns: int = 30) -> uuid.UUID:
    """A stored conversation of `turns` questions and answers (2 × turns messages)."""
    with Session(engine) as session:
        cid, _ = chat(session, who, [(f"question {i} about apples", f"answer {i}") for i in range(turns)],
                      provider="openai", model=model)
    return cid


def path_of(engine: sa.Engine, who: str, cid: uuid.UUID) -> list:
    with Session(engine) as session:
        return repo.get_conversation(session=session, owner=who, conversation_id=cid).messages


def sent_to(fake_server, model: str) -> list[list[dict]]:
    """The messages of every chat-completions request for `model`, in order."""
    return [r.json["messages"] for r in fake_server.requests if r.model == model and r.path.endswith("/chat/completions")]


async def send(turns: ChatTurns, who: str, text: str, model: str, **kwargs) -> Update:
    async with aclosing(turns.send(owner=who, identity=Identity(who), text=text, model=f"openai:{model}", **kwargs)) as events:
        got: list[ChatEvent] = [e async for e in events]
    last = got[-1]
    assert isinstance(last, Update) and last.result.finish_reason == FinishReason.STOP, last
    return last


def is_summary(message: dict) -> bool:
    return message["role"] == "system" and message["content"].startswith(SUMMARY_HEADER.split("(")[0])


async def test_a_60_message_conversation_sends_a_summary_and_the_recent_messages(services, fake_server, engine, names):
    chat_model, summariser = names
    who = f"user:{uuid.uuid4().hex[:8]}"
    cid = long_chat(engine, who, chat_model)
    context = [Message(role=m.role, content=m.content) for m in path_of(engine, who, cid)]
    turns = ChatTurns(services)
    # The chat tab's path: the context is what the browser shows, placed against the store by its user texts.
    last = await send(turns, who, "what did we say first?", chat_model, context=context,
                      shown=[m.content for m in context if m.role == "user"], conversation_id=str(cid))
    [request] = sent_to(fake_server, chat_model)
    assert is_summary(request[0]) and SUMMARY in request[0]["content"] and "50 messages" in request[0]["content"]
    # The newest 10 messages follow, whole, then the new question; the 50 older ones are not sent.
    assert [m["content"] for m in request[1:]] == [m.content for m in context[50:]] + ["what did we say first?"]
    [summary_input] = sent_to(fake_server, summariser)
    told = summary_input[-1]["content"]
    assert "question 0 about apples" in told and "answer 24" in told and "question 25" not in told
    # The chat shows a folded notice whose body is the summary.
    [note] = [n for n in last.notes if n.startswith("📝")]
    title, _, body = note.partition("\n\n")
    assert "50 earlier messages" in title and body == SUMMARY


async def test_the_summary_is_made_once_and_reused_for_three_more_turns(services, fake_server, engine, names, monkeypatch):
    chat_model, summariser = names
    who = f"user:{uuid.uuid4().hex[:8]}"
    cid = long_chat(engine, who, chat_model)
    turns = ChatTurns(services)
    reads: list[str] = []

    def counted_read_path(**kwargs):
        reads.append(kwargs["conversation_id"])
        return read_path(**kwargs)

    monkeypatch.setattr(summaries, "read_path", counted_read_path)
    for i in range(4):  # the API's path: the model is sent the stored path down to the current leaf
        await send(turns, who, f"follow-up {i}", chat_model, conversation_id=str(cid), parent_id="")
    requests = sent_to(fake_server, chat_model)
    assert len(requests) == 4 and len(sent_to(fake_server, summariser)) == 1, "one summary call for four turns"
    assert reads == [str(cid)], "the turns that reuse the summary read no path from the database"
    for i, request in enumerate(requests):
        assert is_summary(request[0]) and SUMMARY in request[0]["content"]
        # Each later turn sends the messages after the summary, its own earlier turns included.
        assert len(request) == 1 + 10 + 2 * i + 1 and request[-1]["content"] == f"follow-up {i}"
    with engine.connect() as c:
        assert c.execute(sa.text("select count(*) from context_summary")).scalar_one() >= 1


async def test_a_failing_summariser_falls_back_to_trimming_and_says_so(fake_server, engine, names):
    chat_model, summariser = names
    fake_server.set_scenario(summariser, Scenario(fail_status=400, fail_times=100))
    built = services_for(fake_server, engine, summariser)
    try:
        who = f"user:{uuid.uuid4().hex[:8]}"
        cid = long_chat(engine, who, chat_model)
        last = await send(ChatTurns(built), who, "next", chat_model, conversation_id=str(cid), parent_id="")
    finally:
        built.close()
    assert len(sent_to(fake_server, summariser)) == 1
    [request] = sent_to(fake_server, chat_model)
    assert not any(is_summary(m) for m in request)
    # Plain trimming: the 60 short messages fit the default window, so all of them are sent.
    assert len(request) == 61 and request[-1]["content"] == "next"
    assert NOTE_FAILED.format(why="the summary model did not answer") in last.notes


async def test_a_slow_summary_does_not_hold_the_reply_and_is_ready_for_the_next_turn(fake_server, engine, names):
    chat_model, summariser = names
    fake_server.set_scenario(summariser, Scenario(text=SUMMARY, stall_after=0, stall_seconds=1.0))
    built = services_for(fake_server, engine, summariser, SUMMARY_TIMEOUT="0.1")
    try:
        who = f"user:{uuid.uuid4().hex[:8]}"
        cid = long_chat(engine, who, chat_model)
        turns = ChatTurns(built)
        first = await send(turns, who, "next", chat_model, conversation_id=str(cid), parent_id="")
        assert any("took longer than 0.1 s" in n for n in first.notes)
        assert not is_summary(sent_to(fake_server, chat_model)[0][0]), "the reply went out without waiting"
        await asyncio.gather(*turns.long._running.values())  # the summary carries on in the background
        await send(turns, who, "and then?", chat_model, conversation_id=str(cid), parent_id="")
    finally:
        built.close()
    assert len(sent_to(fake_server, summariser)) == 1, "the background summary was stored and reused"
    assert is_summary(sent_to(fake_server, chat_model)[1][0])


async def test_another_branch_gets_its_own_summary(services, fake_server, engine, names):
    chat_model, summariser = names
    who = f"user:{uuid.uuid4().hex[:8]}"
    cid = long_chat(engine, who, chat_model)
    turns = ChatTurns(services)
    path = path_of(engine, who, cid)
    await send(turns, who, "on the main branch", chat_model, conversation_id=str(cid), parent_id="")
    assert len(sent_to(fake_server, summariser)) == 1
    # A branch from answer 19 (40 messages above it) does not share the part the first summary covers (to answer 24).
    await send(turns, who, "on an early branch", chat_model, conversation_id=str(cid), parent_id=str(path[39].id))
    summaries = sent_to(fake_server, summariser)
    assert len(summaries) == 2, "a new summary for the other branch"
    told = summaries[1][-1]["content"]
    assert "answer 14" in told and "question 15" not in told and "answer 24" not in told
    early = sent_to(fake_server, chat_model)[-1]
    assert is_summary(early[0]) and "30 messages" in early[0]["content"]
    assert [m["content"] for m in early[1:]] == [m.content for m in path[30:40]] + ["on an early branch"]
    # A branch from answer 27 goes through the first summary's last message (answer 24): it reuses it.
    await send(turns, who, "on a late branch", chat_model, conversation_id=str(cid), parent_id=str(path[55].id))
    assert len(sent_to(fake_server, summariser)) == 2
    late = sent_to(fake_server, chat_model)[-1]
    assert is_summary(late[0]) and "50 messages" in late[0]["content"] and len(late) == 1 + 6 + 1


async def test_summaries_off_and_short_conversations_send_everything(fake_server, engine, names):
    chat_model, summariser = names
    built = services_for(fake_server, engine, summariser, SUMMARIES="off")
    try:
        who = f"user:{uuid.uuid4().hex[:8]}"
        cid = long_chat(engine, who, chat_model)
        await send(ChatTurns(built), who, "next", chat_model, conversation_id=str(cid), parent_id="")
        short = long_chat(engine, who, chat_model, turns=5)
        await send(ChatTurns(built), who, "next", chat_model, conversation_id=str(short), parent_id="")
    finally:
        built.close()
    assert [len(r) for r in sent_to(fake_server, chat_model)] == [61, 11]
    assert sent_to(fake_server, summariser) == []


def test_settings_are_read_and_checked():
    assert SummarySettings.from_env({}) == SummarySettings(enabled=True, after_messages=20, model="", timeout=20.0)
    got = SummarySettings.from_env({"SUMMARIES": "off", "SUMMARY_AFTER_MESSAGES": "8", "SUMMARY_MODEL": "openai:gpt-4o-mini"})
    assert (got.enabled, got.after_messages, got.model) == (False, 8, "openai:gpt-4o-mini")
    for bad in ({"SUMMARY_AFTER_MESSAGES": "2"}, {"SUMMARY_AFTER_MESSAGES": "many"}, {"SUMMARIES": "maybe"}):
        with pytest.raises(ValueError):
            SummarySettings.from_env(bad)


async def test_the_reported_input_tokens_calibrate_the_next_turns_estimate(services, fake_server, engine, names):
    chat_model, _ = names
    who = f"user:{uuid.uuid4().hex[:8]}"
    turns = ChatTurns(services)
    # One word of 40 characters: the 4-characters rule says 10 tokens, the fake reports words plus 3 a message.
    first = await send(turns, who, "x" * 40, chat_model)
    info = services.registry.resolve(f"openai:{chat_model}")[1]
    reported = first.result.input_tokens
    assert reported == 1 + 3
    # Our estimate of what was sent: 10 for the text plus 4 for the message's role markers.
    assert turns.long.calibration.scale(first.conversation_id, info.ref) == max(0.5, reported / 14)
    counter = turns.long.counter(first.conversation_id, info)
    assert counter.scale == 0.5 and counter("y" * 400) == 50, "the next turn's estimate is scaled"
    assert turns.long.counter("another conversation", info).scale == 1.0


async def test_another_users_conversation_id_reads_no_summary_and_deleting_takes_the_summary_along(
        services, fake_server, engine, names):
    chat_model, summariser = names
    who, other = f"user:{uuid.uuid4().hex[:8]}", f"user:{uuid.uuid4().hex[:8]}"
    cid = long_chat(engine, who, chat_model)
    turns = ChatTurns(services)
    await send(turns, who, "next", chat_model, conversation_id=str(cid), parent_id="")
    assert len(sent_to(fake_server, summariser)) == 1
    # Another user naming this conversation, with the same texts as context: no summary of it reaches them.
    context = [Message(role=m.role, content=m.content) for m in path_of(engine, who, cid)]
    await send(turns, other, "mine?", chat_model, context=context, shown=[m.content for m in context if m.role == "user"],
               conversation_id=str(cid))
    assert not any(is_summary(m) for m in sent_to(fake_server, chat_model)[-1])
    assert len(sent_to(fake_server, summariser)) == 1

    def stored() -> int:
        with engine.connect() as c:
            return c.execute(sa.text("select count(*) from context_summary where conversation_id = :c"),
                             {"c": cid.hex if engine.dialect.name == "sqlite" else cid}).scalar_one()

    assert stored() == 1
    with Session(engine) as session:
        repo.delete_conversation(session=session, owner=who, conversation_id=cid)
    assert stored() == 0


async def test_a_summariser_that_breaks_unexpectedly_falls_back_too(services, fake_server, engine, names, monkeypatch):
    chat_model, summariser = names

    async def broken(self):
        raise RuntimeError("a bug in the summary call")

    monkeypatch.setattr(Turn, "run", broken)  # only the summary call runs a Turn to its end; the reply streams
    who = f"user:{uuid.uuid4().hex[:8]}"
    cid = long_chat(engine, who, chat_model)
    last = await send(ChatTurns(services), who, "next", chat_model, conversation_id=str(cid), parent_id="")
    assert NOTE_FAILED.format(why="the summary model did not answer") in last.notes
    assert len(sent_to(fake_server, chat_model)[-1]) == 61
