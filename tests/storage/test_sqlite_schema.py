"""A new SQLite file is built from storage/sqlite_schema.sql, which must be what the migrations build."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy import text
from sqlmodel import Session

from storage import db, sqlite_schema
from storage import repository as repo


def migrated(path: Path) -> list[tuple[str, str, str, str | None]]:
    """The whole schema of a new database at `path` migrated by Alembic."""
    engine = db.make_engine(f"sqlite:///{path}")
    db.migrate(engine, "head")
    engine.dispose()
    return schema_of(path)


def schema_of(path: Path) -> list[tuple[str, str, str, str | None]]:
    """Everything in sqlite_master (FTS5's own tables and SQLite's automatic indexes too), not what `dump` picks."""
    with sqlite3.connect(path) as connection:
        rows = sorted(connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall())
    connection.close()
    return rows


def test_the_schema_file_is_what_the_migrations_build(tmp_path):
    revision, statements = sqlite_schema.read(sqlite_schema.SCHEMA_FILE.read_text(encoding="utf-8"))
    assert revision == db.HEAD_REVISION, "a new migration: run `python -m storage.sqlite_schema` and commit the file"
    migrated(tmp_path / "m.db")
    with sqlite3.connect(tmp_path / "m.db") as connection:
        assert statements == sqlite_schema.dump(connection), "the migrations changed: run `python -m storage.sqlite_schema`"
    connection.close()


def test_a_new_file_gets_the_migrated_schema_without_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    code = ("import sys; from storage.db import make_engine, init_db, current_revision; e = make_engine({url!r}); "
            "init_db(e); print(current_revision(e), 'alembic' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code.format(url=url)], capture_output=True, text=True, check=True)
    assert run.stdout.split() == [db.HEAD_REVISION, "False"], run.stderr
    assert schema_of(tmp_path / "new.db") == migrated(tmp_path / "m.db")
    # And it works as one: a message is saved and found by full-text search (FTS5's table and triggers).
    engine = db.make_engine(url)
    with Session(engine) as session:
        conversation = repo.create_conversation(session=session, owner="alice").id
        repo.begin_turn(session=session, owner="alice", conversation_id=conversation, content="zebra crossing")
        assert len(repo.search_messages(session=session, owner="alice", query="zebra")) == 1
    engine.dispose()


def test_a_file_with_tables_in_it_is_left_to_the_migrations(tmp_path):
    path = tmp_path / "used.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (x TEXT)")
    connection.close()
    engine = db.make_engine(f"sqlite:///{path}")
    assert not sqlite_schema.create(engine, db.HEAD_REVISION)
    assert schema_of(path) == [("table", "notes", "notes", "CREATE TABLE notes (x TEXT)")]
    engine.dispose()


def test_a_schema_file_of_another_revision_is_not_used(tmp_path, monkeypatch):
    old = tmp_path / "old.sql"
    old.write_text(sqlite_schema.SCHEMA_FILE.read_text(encoding="utf-8").replace(f"revision: {db.HEAD_REVISION}", "revision: 0010"))
    monkeypatch.setattr(sqlite_schema, "SCHEMA_FILE", old)
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert not sqlite_schema.create(engine, db.HEAD_REVISION)
    db.init_db(engine)  # the migrations build it instead
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == db.HEAD_REVISION
    engine.dispose()
    assert schema_of(tmp_path / "x.db") == migrated(tmp_path / "m.db")


def test_two_starts_on_one_new_file_build_it_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'both.db'}"
    engines = [db.make_engine(url), db.make_engine(url)]
    errors: list[BaseException] = []

    def start(engine):
        try:
            db.init_db(engine)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with engines[0].connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [db.HEAD_REVISION]
    for e in engines:
        e.dispose()
    assert schema_of(tmp_path / "both.db") == migrated(tmp_path / "m.db")
