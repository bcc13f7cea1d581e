"""SQLite writers in one process queue on a lock in Python, never in SQLite's busy handler (storage/sqlite_writes.py).

The handler sleeps and polls (up to 100 ms between tries), which made a burst of 100 users' first writes
wait seconds with the lock mostly free. These tests switch SQLite's own waiting off on every connection
(`PRAGMA busy_timeout = 0`: a writer that meets another fails at once with "database is locked"), so any
two writers that reach SQLite together show up as a failure instead of as a slow test.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, text
from sqlmodel import Session

from storage import db
from storage import repository as repo
from storage.errors import StorageUnavailable

THREADS = 8
WRITES = 15


def _engine(path: Path, **kwargs: object) -> Engine:
    engine = db.make_engine(f"sqlite:///{path}", **kwargs)  # type: ignore[arg-type]  # the keyword arguments make_engine takes

    @event.listens_for(engine, "connect")
    def no_busy_wait(dbapi_connection, _record):  # noqa: ANN001, ANN202 - SQLAlchemy's event signature
        dbapi_connection.execute("PRAGMA busy_timeout = 0")

    return engine


def _hammer(engine: Engine, owner: str) -> list[BaseException]:
    """THREADS threads, each making conversations and appending turns as fast as it can, all started together."""
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(n: int) -> None:
        try:
            start.wait()
            for _ in range(WRITES):
                with Session(engine) as session:
                    conv = repo.create_conversation(session=session, owner=f"{owner}{n}")
                with Session(engine) as session:
                    repo.begin_turn(session=session, owner=f"{owner}{n}", conversation_id=conv.id, content="hi")
        except BaseException as e:  # noqa: BLE001 - collected and asserted on below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_concurrent_writers_never_meet_in_sqlite(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "p.db")
    db.init_db(engine)
    errors = _hammer(engine, "w")
    assert errors == []
    with Session(engine) as session:
        assert session.execute(text("SELECT count(*) FROM conversation")).scalar_one() == THREADS * WRITES
        assert session.execute(text("SELECT count(*) FROM message WHERE role = 'user'")).scalar_one() == THREADS * WRITES
    engine.dispose()


def test_switched_off_the_writers_meet_in_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The measurement switch (bench.cpu --ab) really switches it off: the same load then collides."""
    monkeypatch.setenv("PARLEY_SQLITE_SERIAL_WRITES", "off")
    engine = _engine(tmp_path / "p.db")
    db.init_db(engine)
    errors = _hammer(engine, "w")
    assert errors and all(isinstance(e, StorageUnavailable) for e in errors)
    engine.dispose()


def test_a_failed_write_and_a_rollback_give_the_lock_back(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "p.db", busy_timeout_ms=200)
    db.init_db(engine)
    with Session(engine) as session:
        conv = repo.create_conversation(session=session, owner="alice")
    # A write that fails inside its transaction (a duplicate primary key), rolled back by the session.
    with Session(engine) as session, pytest.raises(Exception, match="UNIQUE"):
        session.execute(text("INSERT INTO conversation (id, owner, title, model, params, pinned, archived, created_at, "
                             "updated_at) SELECT id, owner, title, model, params, pinned, archived, created_at, updated_at "
                             "FROM conversation"))
    # A transaction ended by SQL, not by the driver's commit().
    with engine.connect() as connection:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        connection.exec_driver_sql("ROLLBACK")
        # A connection closed in the middle of a write transaction.
        raw = engine.raw_connection()
        raw.cursor().execute("UPDATE conversation SET title = 'x'")
        raw.invalidate()
        # Every one of them gave the lock back: another writer goes straight through.
        with Session(engine) as session:
            repo.rename_conversation(session=session, owner="alice", conversation_id=conv.id, title="Renamed")
    engine.dispose()


def test_a_held_write_lock_times_out_as_storage_unavailable(tmp_path: Path) -> None:
    engine = _engine(tmp_path / "p.db", busy_timeout_ms=100)
    db.init_db(engine)
    holder = engine.raw_connection()
    holder.cursor().execute("BEGIN IMMEDIATE")
    try:
        with Session(engine) as session, pytest.raises(StorageUnavailable):
            repo.create_conversation(session=session, owner="alice")
        # Reads do not wait for the writer (WAL).
        with Session(engine) as session:
            assert repo.list_conversations(session=session, owner="alice") == []
    finally:
        holder.rollback()
        holder.close()
    engine.dispose()
