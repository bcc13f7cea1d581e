"""The chat-turn use case (core.chat.ChatTurns) without Gradio: real storage (SQLite, and PostgreSQL when
TEST_DATABASE_URL is set), the fake provider server, and the app's own Services."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import aclosing

import pytest
import sqlalchemy as sa

from chat.registry import Registry, Settings
from chat.types import FinishReason, Message
from core.chat import KEPT, ChatEvent, ChatTurns, Flagged, Refused, Update
from core.config import AppConfig
from core.params import ParamInputs
from core.ratelimit import Identity
from core.services import Services
from storage.db import init_db, make_engine
from storage.errors import StorageUnavailable
from tests.apphelpers import ROOT, app_env
from tests.storage.conftest import pg_schema_engine

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
MODEL = "openai:gpt-test"


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'turns.db'}")
        init_db(engine)
        yield engine
        engine.dispose()
        return
    with pg_schema_engine() as engine:
        init_db(engine)
        yield engine


def make_services(fake_server, engine: sa.Engine, **env: str) -> Services:
    values = app_env(fake_server, "unused", **env)
    return Services.build(AppConfig.from_env(values), Registry.from_settings(Settings.from_env(values)), engine)


@pytest.fixture
def services(fake_server, engine) -> Iterator[Services]:
    services = make_services(fake_server, engine, MAX_MESSAGE_CHARS="200")
    yield services
    services.close()


def owner() -> str:
    return f"user:{uuid.uuid4().hex[:8]}"


async def run(turns: ChatTurns, who: str, text: str, **kwargs) -> list[ChatEvent]:
    kwargs.setdefault("model", MODEL)
    async with aclosing(turns.send(owner=who, identity=Identity(who), text=text, **kwargs)) as events:
        return [e async for e in events]


def rows(services: Services, who: str) -> list[tuple]:
    """(conversation, role, content, finish_reason, input_tokens, output_tokens) of this owner's messages, in order."""
    with services.engine.connect() as c:
        found = c.execute(sa.text(
            "select m.conversation_id, m.role, m.content, m.finish_reason, m.input_tokens, m.output_tokens "
            "from message m join conversation c on c.id = m.conversation_id where c.owner = :o "
            "order by c.created_at, m.position"), {"o": who}).all()
    return [(str(uuid.UUID(str(r[0]))), *r[1:]) for r in found]  # SQLite keeps the id as bare hex


def completions(fake_server) -> int:
    return sum(1 for r in fake_server.requests if r.path.endswith("/chat/completions"))


def failing_storage(services: Services) -> Callable[[], None]:
    """Every storage call raises StorageUnavailable until the returned function is called."""
    real = services._call

    def call(fn, kwargs):
        raise StorageUnavailable("The database is unavailable or busy; try again shortly (test).")

    services._call = call  # type: ignore[method-assign]  # a stand-in for the storage call, restored afterwards
    return lambda: setattr(services, "_call", real)


def test_the_use_case_imports_no_gradio():
    code = "import sys, core.chat, core.params; assert not any(m.split('.')[0] in ('gradio', 'gradio_client') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


async def test_a_turn_streams_and_is_saved_with_its_usage(services, fake_server):
    who = owner()
    turns = ChatTurns(services)
    events = await run(turns, who, "hello there", system_prompt="Be brief.", params=ParamInputs(temperature="0.5"))
    assert events and all(isinstance(e, Update) for e in events)
    last = events[-1]
    assert isinstance(last, Update) and last.result.done and last.result.finish_reason == FinishReason.STOP
    assert last.conversation_id and last.label.endswith("gpt-test") and last.notes == ()
    sent = fake_server.requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."} and sent["messages"][-1]["content"] == "hello there"
    assert sent["temperature"] == 0.5
    stored = rows(services, who)
    assert [(r[0], r[1], r[2], r[3]) for r in stored] == [
        (last.conversation_id, "user", "hello there", None), (last.conversation_id, "assistant", last.result.text, "stop")]
    usage = last.result.usage
    assert stored[1][4:] == (usage.input_tokens, usage.output_tokens) and usage.output_tokens and not usage.estimated
    assert not turns._running, "nothing is left waiting for Stop"


async def test_the_next_turn_sends_the_context_and_continues_the_conversation(services, fake_server):
    who = owner()
    turns = ChatTurns(services)
    first = (await run(turns, who, "one"))[-1]
    assert isinstance(first, Update)
    context = [Message(role="user", content="one"), Message(role="assistant", content=first.result.text)]
    second = (await run(turns, who, "two", context=context, shown=["one"], conversation_id=first.conversation_id))[-1]
    assert isinstance(second, Update) and second.conversation_id == first.conversation_id
    assert [m["content"] for m in fake_server.requests[-1].json["messages"]] == ["one", first.result.text, "two"]
    assert [r[2] for r in rows(services, who) if r[1] == "user"] == ["one", "two"]


@pytest.mark.parametrize("text, kind", [("x" * 201, "too_long"), ("   \n ", "empty")])
async def test_a_refused_message_is_neither_sent_nor_saved(services, fake_server, text, kind):
    who = owner()
    before = completions(fake_server)
    events = await run(ChatTurns(services), who, text, conversation_id="c-open")
    assert len(events) == 1 and isinstance(events[0], Refused)
    assert events[0].kind == kind and events[0].conversation_id == "c-open"
    if kind == "too_long":
        assert "201 characters" in events[0].message and "200" in events[0].message
    assert completions(fake_server) == before, "nothing was sent"
    assert rows(services, who) == [], "nothing was saved"


async def test_bad_parameters_and_unknown_models_are_refused_before_anything_is_sent(services, fake_server):
    who = owner()
    turns = ChatTurns(services)
    before = completions(fake_server)
    [bad] = await run(turns, who, "hi", params=ParamInputs(temperature="hot"))
    assert isinstance(bad, Refused) and bad.kind == "params" and "temperature must be" in bad.message
    [unknown] = await run(turns, who, "hi", model="nosuch:model")
    assert isinstance(unknown, Refused) and unknown.kind == "model"
    assert completions(fake_server) == before and rows(services, who) == []


async def test_a_rate_limited_turn_is_refused_and_neither_sent_nor_saved(fake_server, engine):
    services = make_services(fake_server, engine, RATE_LIMIT="1/minute")
    try:
        who = owner()
        turns = ChatTurns(services)
        first = await run(turns, who, "first")
        assert isinstance(first[-1], Update) and first[-1].result.done
        before = completions(fake_server)
        [second] = await run(turns, who, "second", shown=["first"], conversation_id=first[-1].conversation_id)
        assert isinstance(second, Refused) and second.kind == "rate_limited" and second.conversation_id == first[-1].conversation_id
        assert completions(fake_server) == before
        assert [r[2] for r in rows(services, who) if r[1] == "user"] == ["first"]
        other = await run(turns, owner(), "someone else")
        assert isinstance(other[-1], Update) and other[-1].result.done, "the limit is per identity"
    finally:
        services.close()


async def test_a_turn_during_an_outage_is_kept_and_the_next_turn_continues_the_conversation(services, fake_server):
    who = owner()
    turns = ChatTurns(services)
    first = (await run(turns, who, "one"))[-1]
    assert isinstance(first, Update)
    conv = first.conversation_id
    restore = failing_storage(services)
    try:
        during = await run(turns, who, "two", context=[Message(role="user", content="one")], shown=["one"], conversation_id=conv)
    finally:
        restore()
    last = during[-1]
    assert isinstance(last, Update) and last.result.done and last.result.text, "the reply still streams"
    assert KEPT in last.notes and last.conversation_id == conv
    assert len(turns.pending) == 1 and [r[2] for r in rows(services, who) if r[1] == "user"] == ["one"]
    after = (await run(turns, who, "three", shown=["one", "two"], conversation_id=conv))[-1]
    assert isinstance(after, Update) and after.conversation_id == conv and after.notes == ()
    assert len(turns.pending) == 0
    stored = rows(services, who)
    assert {r[0] for r in stored} == {conv}, "one conversation"
    assert [(r[1], r[2]) for r in stored] == [
        ("user", "one"), ("assistant", first.result.text), ("user", "two"), ("assistant", last.result.text),
        ("user", "three"), ("assistant", after.result.text)]


async def test_a_chat_begun_during_an_outage_finds_its_conversation_afterwards(services, fake_server):
    who = owner()
    turns = ChatTurns(services)
    restore = failing_storage(services)
    try:
        during = (await run(turns, who, "first of a new chat"))[-1]
    finally:
        restore()
    assert isinstance(during, Update) and during.conversation_id is None and KEPT in during.notes
    after = (await run(turns, who, "second", shown=["first of a new chat"]))[-1]
    assert isinstance(after, Update) and after.conversation_id is not None
    assert [(r[0], r[2]) for r in rows(services, who) if r[1] == "user"] == [
        (after.conversation_id, "first of a new chat"), (after.conversation_id, "second")]


async def test_stop_keeps_the_partial_reply_and_settled_names_its_conversation(services, fake_server):
    who = owner()
    turns = ChatTurns(services)
    streaming = asyncio.Event()

    async def surface() -> None:
        async with aclosing(turns.send(owner=who, identity=Identity(who), text="go slowly", model="openai:slow")) as events:
            async for event in events:
                if isinstance(event, Update) and event.result.text:
                    streaming.set()

    task = asyncio.ensure_future(surface())
    await asyncio.wait_for(streaming.wait(), 10)
    task.cancel()  # Stop, as Gradio does it: the surface's task is cancelled
    conv = await turns.settled(who)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert conv is not None
    stored = rows(services, who)
    assert [(r[0], r[1], r[3]) for r in stored] == [(conv, "user", None), (conv, "assistant", "cancelled")]
    assert stored[1][2], "the reply so far is kept"
    assert services.active_streams == 0 and not turns._running


async def test_a_flagged_message_is_stored_flagged_and_never_sent(fake_server, engine):
    services = make_services(fake_server, engine, MODERATION="openai")
    try:
        who = owner()
        before = completions(fake_server)
        [flagged] = await run(ChatTurns(services), who, "please FLAGME now")
        assert isinstance(flagged, Flagged) and flagged.categories and "rephrase" in flagged.reply
        assert completions(fake_server) == before, "a flagged message never reaches the model"
        stored = rows(services, who)
        assert [(r[0], r[1], r[2], r[3]) for r in stored] == [
            (flagged.conversation_id, "user", "please FLAGME now", None), (flagged.conversation_id, "assistant", flagged.reply, "content_filter")]
    finally:
        services.close()


async def test_one_log_line_per_turn_without_content(services, caplog):
    caplog.set_level(logging.INFO, logger="parley.turns")
    who = owner()
    last = (await run(ChatTurns(services), who, "my very private prompt"))[-1]
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "parley.turns"]
    assert line["owner"] == who and line["outcome"] == "stop" and line["saved"] is True
    assert line["conversation"] == last.conversation_id and "prompt" not in line and "reply" not in line
