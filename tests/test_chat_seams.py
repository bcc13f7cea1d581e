"""The chat turn's seams: what is refused is never sent nor saved, and a database outage loses no turn.

Through the running app (gradio_client), the fake provider server recording what each provider call
carried, and the database the app writes to (SQLite, and PostgreSQL when TEST_DATABASE_URL is set).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from gradio_client import Client

from storage.errors import StorageUnavailable
from tests.apphelpers import app_env, in_process_app
from tests.storage.conftest import pg_schema_engine

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh database for one app: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'seams.db'}"
        return
    with pg_schema_engine() as engine:
        # A lock held elsewhere must fail fast (as storage.db's own lock timeout makes it), not hang the test.
        options = engine.url.query["options"] + " -clock_timeout=1000"
        yield engine.url.update_query_dict({"options": options}).render_as_string(hide_password=False)


def answer(messages) -> str:
    return "".join(m["content"] for m in messages if not (m.get("metadata") or {}).get("title"))


def provider_calls(fake_server) -> list[list[dict]]:
    """The messages of every chat completion the fake OpenAI server received, in order."""
    return [r.json["messages"] for r in fake_server.requests if r.path.endswith("/chat/completions") and r.json]


def said(messages: list[dict]) -> str:
    return json.dumps(messages)


def stored(services) -> list[tuple[str, str, str, str | None]]:
    """(conversation, role, content, finish_reason) of every stored message, in conversation order."""
    with services.engine.connect() as c:
        rows = c.execute(sa.text(
            "select cast(conversation_id as varchar) as conv, role, content, finish_reason from message "
            "order by conversation_id, position")).all()
    return [tuple(r) for r in rows]


@contextlib.contextmanager
def database_locked(url: str) -> Iterator[None]:
    """Another connection holds the tables the chat writes, as a long migration or a stuck writer would."""
    if url.startswith("sqlite"):
        con = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            con.execute("ROLLBACK")
            con.close()
        return
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            c.execute(sa.text("LOCK TABLE conversation, message IN ACCESS EXCLUSIVE MODE"))
            try:
                yield
            finally:
                c.rollback()
    finally:
        engine.dispose()


# -- refused messages (issue 12, item 3) --------------------------------------------------------


def test_a_message_refused_for_length_is_never_sent_nor_saved_and_the_chat_carries_on(fake_server, database_url):
    env = app_env(fake_server, database_url, MAX_MESSAGE_CHARS="1000")
    refused_text = "R" * 1001
    with in_process_app(env) as (url, services):
        client = Client(url, verbose=False)
        first = client.predict(message="the first question", model="openai:gpt-test", system_prompt="", api_name="/chat")
        assert "lorem" in answer(first)
        before = len(provider_calls(fake_server))
        refusal = client.predict(message=refused_text, model="openai:gpt-test", system_prompt="", api_name="/chat")
        assert "limit is 1,000" in json.dumps(refusal)
        assert len(provider_calls(fake_server)) == before, "the refused message made no provider call"
        second = client.predict(message="the second question", model="openai:gpt-test", system_prompt="", api_name="/chat")
        assert "lorem" in answer(second)
        context = provider_calls(fake_server)[-1]
        assert refused_text not in said(context), "the refused text never reaches the provider, not even as context"
        assert [m["content"] for m in context if m["role"] == "user"] == ["the first question", "the second question"]
        rows = stored(services)
    assert all(refused_text not in content for _, _, content, _ in rows), "nothing refused is saved"
    assert len({conv for conv, *_ in rows}) == 1, "the refused message did not split the conversation"
    assert [content for _, role, content, _ in rows if role == "user"] == ["the first question", "the second question"]
    assert "not sent" in json.dumps(refusal), "the user is told the message went nowhere"


def test_a_message_for_an_unknown_model_is_never_sent_later_as_context(fake_server, tmp_path):
    env = app_env(fake_server, f"sqlite:///{tmp_path / 'unknown.db'}")
    with in_process_app(env) as (url, services):
        client = Client(url, verbose=False)
        refusal = client.predict(message="meant for another model", model="nosuch:model", system_prompt="", api_name="/chat")
        assert "nosuch" in json.dumps(refusal)
        client.predict(message="now to a real one", model="openai:gpt-test", system_prompt="", api_name="/chat")
        context = provider_calls(fake_server)[-1]
        assert "meant for another model" not in said(context)
        assert all("meant for another model" not in content for _, _, content, _ in stored(services))


def test_a_flagged_message_is_stored_flagged_but_never_sent_as_context(fake_server, tmp_path):
    env = app_env(fake_server, f"sqlite:///{tmp_path / 'flag.db'}", MODERATION="openai")
    with in_process_app(env) as (url, services):
        client = Client(url, verbose=False)
        client.predict(message="a fine start", model="openai:gpt-test", system_prompt="", api_name="/chat")
        refused = client.predict(message="please FLAGME now", model="openai:gpt-test", system_prompt="", api_name="/chat")
        assert "flagged" in json.dumps(refused).lower()
        client.predict(message="a fine follow-up", model="openai:gpt-test", system_prompt="", api_name="/chat")
        context = provider_calls(fake_server)[-1]
        assert "FLAGME" not in said(context) and "flagged" not in said(context).lower()
        assert [m["content"] for m in context if m["role"] == "user"] == ["a fine start", "a fine follow-up"]
        rows = stored(services)
    assert len({conv for conv, *_ in rows}) == 1, "the flagged turn is stored in the same conversation"
    assert [(role, reason) for _, role, _, reason in rows] == [
        ("user", None), ("assistant", "stop"), ("user", None), ("assistant", "content_filter"), ("user", None), ("assistant", "stop")]


# -- database outages (issue 12, item 5) --------------------------------------------------------


def test_a_turn_made_while_the_database_is_locked_is_kept_and_the_conversation_continues(fake_server, database_url):
    env = app_env(fake_server, database_url, DB_LOCK_TIMEOUT="1")
    with in_process_app(env) as (url, services):
        client = Client(url, verbose=False)
        with database_locked(database_url):
            during = client.predict(message="asked during the outage", model="openai:gpt-test", system_prompt="", api_name="/chat")
        assert "lorem" in answer(during), "the reply still streams"
        first_reply = answer(during)
        after = client.predict(message="asked after it", model="openai:gpt-test", system_prompt="", api_name="/chat")
        context = provider_calls(fake_server)[-1]
        assert [(m["role"], m["content"]) for m in context] == [
            ("user", "asked during the outage"), ("assistant", first_reply), ("user", "asked after it")]
        rows = stored(services)
    assert len({conv for conv, *_ in rows}) == 1, "one conversation, not two"
    assert [(role, content if role == "user" else reason) for _, role, content, reason in rows] == [
        ("user", "asked during the outage"), ("assistant", "stop"), ("user", "asked after it"), ("assistant", "stop")]
    assert rows[1][2] == first_reply, "the kept reply is stored whole"
    assert "kept and will be saved" in json.dumps(during), "the user is told what happened"
    assert "kept" not in json.dumps(after) and "could not be saved" not in json.dumps(after)


def _failing_storage(services, fail: Callable[[object], bool]) -> Callable[[], None]:
    """Make the app's storage calls raise StorageUnavailable while `fail(fn)` says so."""
    real = services._call

    def call(fn, kwargs):
        if fail(fn):
            raise StorageUnavailable("The database is unavailable or busy; try again shortly (test).")
        return real(fn, kwargs)

    services._call = call
    return lambda: setattr(services, "_call", real)


def test_an_outage_mid_conversation_keeps_the_turn_in_that_conversation_in_order(fake_server, database_url):
    env = app_env(fake_server, database_url)
    with in_process_app(env) as (url, services):
        client = Client(url, verbose=False)
        client.predict(message="one", model="openai:gpt-test", system_prompt="", api_name="/chat")
        restore = _failing_storage(services, lambda fn: True)
        try:
            two = client.predict(message="two", model="openai:gpt-test", system_prompt="", api_name="/chat")
            three = client.predict(message="three", model="openai:gpt-test", system_prompt="", api_name="/chat")
        finally:
            restore()
        client.predict(message="four", model="openai:gpt-test", system_prompt="", api_name="/chat")
        context = provider_calls(fake_server)[-1]
        assert [m["content"] for m in context if m["role"] == "user"] == ["one", "two", "three", "four"]
        rows = stored(services)
    assert len({conv for conv, *_ in rows}) == 1
    assert [content for _, role, content, _ in rows if role == "user"] == ["one", "two", "three", "four"]
    assert all(reason == "stop" for _, role, _, reason in rows if role == "assistant")
    assert "kept and will be saved" in json.dumps(two) and "kept and will be saved" in json.dumps(three)


def test_a_reply_that_could_not_be_finished_is_written_before_the_next_turn(fake_server, tmp_path):
    from storage import repository as repo

    env = app_env(fake_server, f"sqlite:///{tmp_path / 'finish.db'}")
    with in_process_app(env) as (url, services):
        client = Client(url, verbose=False)
        restore = _failing_storage(services, lambda fn: fn is repo.finish_turn)
        try:
            first = client.predict(message="first", model="openai:gpt-test", system_prompt="", api_name="/chat")
        finally:
            restore()
        client.predict(message="second", model="openai:gpt-test", system_prompt="", api_name="/chat")
        rows = stored(services)
    assert len({conv for conv, *_ in rows}) == 1
    assert [(role, reason) for _, role, _, reason in rows] == [
        ("user", None), ("assistant", "stop"), ("user", None), ("assistant", "stop")]
    assert rows[1][2] == answer(first)
    assert "kept and will be saved" in json.dumps(first)
