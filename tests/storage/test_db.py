"""Engines, SQLite settings, failures of the database itself, and migrations that keep old data."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect, text
from sqlmodel import Session, SQLModel

from storage import db
from storage import repository as repo
from storage.errors import StorageError, StorageUnavailable


def test_sqlite_pragmas(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'sub' / 'dir' / 'x.db'}")  # folders are created
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar_one() == db.SQLITE_BUSY_TIMEOUT_MS
        assert connection.execute(text("PRAGMA synchronous")).scalar_one() == 1  # NORMAL
    engine.dispose()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h:5432/d", "postgresql+psycopg://u:p@h:5432/d"),
        ("postgres://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_url_normalisation(given, expected):
    assert db.normalize_url(given) == expected


def test_default_url(monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/d")
    assert db.default_url() == "postgresql://u@h/d"
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setattr(db, "SPACES_DATA_DIR", tmp_path / "missing")
    monkeypatch.chdir(tmp_path)
    assert db.default_url() == f"sqlite:///{tmp_path / 'data' / 'parley.db'}"
    monkeypatch.setattr(db, "SPACES_DATA_DIR", tmp_path)
    assert db.default_url() == f"sqlite:///{tmp_path / 'parley.db'}"


def test_make_engine_default_creates_data_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(db, "SPACES_DATA_DIR", tmp_path / "missing")
    monkeypatch.chdir(tmp_path)
    engine = db.make_engine()
    db.init_db(engine)
    engine.dispose()
    assert (tmp_path / "data" / "parley.db").is_file()


def test_database_down_is_storage_unavailable():
    engine = db.make_engine("postgresql://postgres@127.0.0.1:1/nowhere", connect_args={"connect_timeout": 2})
    with pytest.raises(StorageUnavailable):
        db.init_db(engine)
    with Session(engine) as session:
        with pytest.raises(StorageUnavailable) as error:
            repo.list_conversations(session=session, owner="alice")
    assert isinstance(error.value, StorageError)
    assert isinstance(error.value.__cause__, Exception)
    engine.dispose()


def test_locked_sqlite_is_storage_unavailable(tmp_path):
    path = tmp_path / "locked.db"
    engine = db.make_engine(f"sqlite:///{path}", busy_timeout_ms=50)
    db.init_db(engine)
    blocker = db.make_engine(f"sqlite:///{path}")
    with blocker.connect() as holding:
        holding.exec_driver_sql("BEGIN IMMEDIATE")
        with Session(engine) as session:
            with pytest.raises(StorageUnavailable):
                repo.create_conversation(session=session, owner="alice")
        holding.exec_driver_sql("ROLLBACK")
    blocker.dispose()
    engine.dispose()


def test_init_db_is_idempotent_and_models_match_head(empty_engine):
    db.init_db(empty_engine)
    db.init_db(empty_engine)
    inspector = inspect(empty_engine)
    for table in SQLModel.metadata.sorted_tables:
        migrated = {c["name"] for c in inspector.get_columns(table.name)}
        migrated -= {"search"}  # PostgreSQL's generated tsvector, deliberately not in the model
        assert migrated == {c.name for c in table.columns}, table.name
    with empty_engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == db.HEAD_REVISION


def _old_rows(dialect: str):
    """Rows as revision 0001 stored them, written with plain SQL."""
    conversation, user, reply = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    as_id = (lambda u: u.hex) if dialect == "sqlite" else str
    when = "2024-05-01 10:00:00.000000" if dialect == "sqlite" else "2024-05-01 10:00:00+00"
    statements = [
        (
            "INSERT INTO conversation (id, owner, title, model, params, pinned, archived, created_at, updated_at) "
            "VALUES (:id, 'alice', 'Old chat', 'demo:echo', '{\"temperature\": 0.5}', :t, :f, :when, :when)",
            {"id": as_id(conversation), "t": True, "f": False, "when": when},
        ),
        (
            "INSERT INTO message (id, conversation_id, owner, position, role, content, created_at) "
            "VALUES (:id, :c, 'alice', 0, 'user', 'Remember the aardvark', :when)",
            {"id": as_id(user), "c": as_id(conversation), "when": when},
        ),
        (
            "INSERT INTO message (id, conversation_id, owner, position, role, content, reasoning, provider, model, "
            "input_tokens, output_tokens, ttft_ms, duration_ms, finish_reason, created_at) "
            "VALUES (:id, :c, 'alice', 1, 'assistant', 'Aardvarks dig', 'burrow thoughts', 'demo', 'echo', "
            "4, 2, 30, 120, 'pending', :when)",
            {"id": as_id(reply), "c": as_id(conversation), "when": when},
        ),
    ]
    return (conversation, user, reply), statements


def test_upgrade_from_first_revision_keeps_data(empty_engine):
    db.migrate(empty_engine, "0001")
    columns = {c["name"] for c in inspect(empty_engine).get_columns("message")}
    assert "feedback" not in columns and "tool_calls" not in columns
    (conversation, user, reply), statements = _old_rows(empty_engine.dialect.name)
    with empty_engine.begin() as connection:
        for sql, params in statements:
            connection.execute(text(sql), params)

    db.init_db(empty_engine)

    with Session(empty_engine) as session:
        detail = repo.get_conversation(session=session, owner="alice", conversation_id=conversation)
        assert detail.conversation.title == "Old chat" and detail.conversation.pinned is True
        assert detail.conversation.params == {"temperature": 0.5}
        assert detail.conversation.created_at == datetime(2024, 5, 1, 10, tzinfo=UTC)
        assert [(m.id, m.content, m.feedback, m.tool_calls) for m in detail.messages] == [
            (user, "Remember the aardvark", None, None),
            (reply, "Aardvarks dig", None, None),
        ]
        # Search covers rows written before search existed, in content and reasoning.
        assert [h.message_id for h in repo.search_messages(session=session, owner="alice", query="aardvark")] == [user]
        assert [h.message_id for h in repo.search_messages(session=session, owner="alice", query="burrow")] == [reply]
        # New columns and start-up repair work on old rows.
        assert repo.mark_interrupted(session=session) == 1
        repo.set_feedback(session=session, owner="alice", message_id=reply, feedback="like")
        assert repo.usage_stats(session=session, owner="alice")[0].count == 1
        # Deleting old rows keeps the index consistent.
        repo.delete_conversation(session=session, owner="alice", conversation_id=conversation)
        assert repo.search_messages(session=session, owner="alice", query="aardvark") == []
    if empty_engine.dialect.name == "sqlite":
        with empty_engine.begin() as connection:
            connection.execute(text("INSERT INTO message_fts(message_fts) VALUES ('integrity-check')"))


def test_downgrade_to_first_revision_and_back(empty_engine):
    from alembic import command

    db.init_db(empty_engine)
    with Session(empty_engine) as session:
        conversation = repo.create_conversation(session=session, owner="alice").id
        repo.begin_turn(session=session, owner="alice", conversation_id=conversation, content="kept through downgrade")
    config = db.alembic_config()
    with empty_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")
    db.init_db(empty_engine)
    with Session(empty_engine) as session:
        assert len(repo.search_messages(session=session, owner="alice", query="downgrade")) == 1


def test_head_revision_constant_matches_alembic():
    from alembic.script import ScriptDirectory

    from storage.db import HEAD_REVISION, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


def test_init_db_on_an_up_to_date_database_does_not_import_alembic(tmp_path):
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'h.db'}"
    code = ("import sys; from storage.db import make_engine, init_db, current_revision; e = make_engine({url!r}); "
            "init_db(e); print(current_revision(e), 'alembic' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", code.format(url=url)], capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", code.format(url=url)], capture_output=True, text=True, check=True)
    assert first.stdout.split() == [db.HEAD_REVISION, "False"], first.stderr  # a new file: storage/sqlite_schema.py
    assert second.stdout.split() == [db.HEAD_REVISION, "False"], second.stderr
