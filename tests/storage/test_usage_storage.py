"""The usage contract in storage: new message columns, their migration, finish_turn, the dashboard's
tokens per second, and the `usage` object of the JSON export (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import inspect, text
from sqlmodel import Session

from chat.types import tokens_per_second
from storage import db
from storage import repository as repo
from storage.errors import InvalidInput
from tests.storage.helpers import add_turn, chat

USAGE = dict(input_tokens=1200, output_tokens=300, reasoning_tokens=100, cached_input_tokens=1000,
             cache_write_tokens=50, usage_estimated=False)  # fmt: skip


def _reply(session, owner="alice", **usage):
    conversation, (ids,) = chat(session, owner, [("q", "a")], ttft_ms=500, duration_ms=2500, **usage)
    return conversation, ids


def test_finish_turn_saves_the_whole_contract(session):
    conversation, ids = _reply(session, **USAGE)
    [_, reply] = repo.get_conversation(session=session, owner="alice", conversation_id=conversation).messages
    assert {k: getattr(reply, k) for k in USAGE} == USAGE


def test_finish_turn_refuses_cache_parts_larger_than_the_prompt_and_changes_nothing(session):
    conversation = repo.create_conversation(session=session, owner="alice").id
    ids = repo.begin_turn(session=session, owner="alice", conversation_id=conversation, content="q", provider="p", model="m")
    with pytest.raises(InvalidInput, match="cannot exceed the input tokens"):
        repo.finish_turn(session=session, owner="alice", message_id=ids.assistant_message_id, content="kept?",
                         finish_reason="stop", input_tokens=10, cached_input_tokens=8, cache_write_tokens=5)
    with pytest.raises(InvalidInput, match="usage_estimated"):
        repo.finish_turn(session=session, owner="alice", message_id=ids.assistant_message_id, content="kept?",
                         finish_reason="stop", usage_estimated="yes")
    [_, reply] = repo.get_conversation(session=session, owner="alice", conversation_id=conversation).messages
    assert reply.finish_reason == "pending" and reply.content == ""
    # The reply can still be finished properly afterwards.
    repo.finish_turn(session=session, owner="alice", message_id=ids.assistant_message_id, content="ok",
                     finish_reason="stop", input_tokens=10, cached_input_tokens=8)


def test_dashboard_rate_is_the_chat_definition(session):
    # One reply each, so the token-weighted rate is that reply's own rate.
    for model, out in (("many", 300), ("few", 4)):
        conversation = repo.create_conversation(session=session, owner="alice").id
        add_turn(session, "alice", conversation, "q", "a", provider="p", model=model, output_tokens=out,
                 ttft_ms=500, duration_ms=2500)
    conversation = repo.create_conversation(session=session, owner="alice").id
    add_turn(session, "alice", conversation, "q", "a", provider="p", model="no-ttft", output_tokens=300, duration_ms=2500)
    stats = {s.model: s for s in repo.usage_stats(session=session, owner="alice")}
    assert stats["many"].tokens_per_second == pytest.approx(tokens_per_second(300, 500, 2500))
    # A few tokens in a burst give no rate, in chat as in the dashboard (before: 2 tok/s here).
    assert stats["few"].tokens_per_second is None is tokens_per_second(4, 500, 2500)
    # Without a time to first token there is no generation time (before: the whole duration was used).
    assert stats["no-ttft"].tokens_per_second is None is tokens_per_second(300, None, 2500)


def test_export_carries_usage_per_assistant_message_and_import_restores_it(session):
    _reply(session, **USAGE)
    exported = json.loads(repo.export_json(session=session, owner="alice"))
    user, assistant = exported["conversations"][0]["messages"]
    assert user.get("usage") is None
    assert assistant["usage"] == {"input_tokens": 1200, "output_tokens": 300, "reasoning_tokens": 100,
                                  "cached_input_tokens": 1000, "cache_write_tokens": 50, "estimated": False}
    (copy,) = repo.import_json(session=session, owner="bob", data=json.dumps(exported))
    [_, reply] = repo.get_conversation(session=session, owner="bob", conversation_id=copy).messages
    assert {k: getattr(reply, k) for k in USAGE} == USAGE


def test_import_of_files_without_usage_and_refusal_of_contradictions(session, count_rows):
    _reply(session, input_tokens=5, output_tokens=6)
    exported = json.loads(repo.export_json(session=session, owner="alice"))
    old = json.loads(json.dumps(exported))
    for m in old["conversations"][0]["messages"]:
        m.pop("usage", None)  # a file written before usage existed
    (copy,) = repo.import_json(session=session, owner="bob", data=json.dumps(old))
    [_, reply] = repo.get_conversation(session=session, owner="bob", conversation_id=copy).messages
    assert (reply.input_tokens, reply.output_tokens, reply.cached_input_tokens, reply.usage_estimated) == (5, 6, None, None)

    before = count_rows()
    bad = json.loads(json.dumps(exported))
    bad["conversations"][0]["messages"][1]["usage"]["output_tokens"] = 99
    with pytest.raises(InvalidInput, match="output_tokens is 6 but usage.output_tokens is 99"):
        repo.import_json(session=session, owner="bob", data=json.dumps(bad))
    bad["conversations"][0]["messages"][1]["usage"].update(output_tokens=6, cached_input_tokens=50)
    with pytest.raises(InvalidInput, match="cannot exceed"):
        repo.import_json(session=session, owner="bob", data=json.dumps(bad))
    assert count_rows() == before


def test_upgrade_from_0003_keeps_old_replies_and_adds_empty_usage_columns(empty_engine):
    db.migrate(empty_engine, "0003")
    assert "cached_input_tokens" not in {c["name"] for c in inspect(empty_engine).get_columns("message")}
    conversation, reply = uuid.uuid4(), uuid.uuid4()
    as_id = (lambda u: u.hex) if empty_engine.dialect.name == "sqlite" else str
    with empty_engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO conversation (id, owner, title, kind, pinned, archived, created_at, updated_at) "
            "VALUES (:id, 'alice', 'Old', 'chat', :f, :f, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"id": as_id(conversation), "f": False})
        connection.execute(text(
            "INSERT INTO message (id, conversation_id, owner, position, role, content, provider, model, input_tokens, "
            "output_tokens, reasoning_tokens, ttft_ms, duration_ms, finish_reason, created_at) VALUES (:id, :c, 'alice', 0, "
            "'assistant', 'old reply', 'demo', 'echo', 40, 300, 100, 500, 2500, 'stop', CURRENT_TIMESTAMP)"),
            {"id": as_id(reply), "c": as_id(conversation)})

    db.migrate(empty_engine, "head")  # the repository reads the newest schema

    with Session(empty_engine) as session:
        [m] = repo.get_conversation(session=session, owner="alice", conversation_id=conversation).messages
        assert (m.input_tokens, m.output_tokens, m.reasoning_tokens) == (40, 300, 100)
        assert (m.cached_input_tokens, m.cache_write_tokens, m.usage_estimated) == (None, None, None)
        exported = json.loads(repo.export_json(session=session, owner="alice"))
        assert exported["conversations"][0]["messages"][0]["usage"]["estimated"] is None
    # And back down: the old columns and rows stay.
    from alembic import command

    config = db.alembic_config()
    with empty_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0003")
    assert "usage_estimated" not in {c["name"] for c in inspect(empty_engine).get_columns("message")}
    with empty_engine.connect() as connection:
        assert connection.execute(text("SELECT output_tokens FROM message")).scalar_one() == 300
