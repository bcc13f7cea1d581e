"""Bounded waits: a locked table or a slow statement fails fast instead of holding a request forever."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from core.config import AppConfig
from core.services import Services
from storage import db
from storage import repository as repo
from storage.errors import StorageUnavailable, unavailable_message

#: How long a test waits for an answer before it calls the call stuck (never a speed assertion:
#: the lock timeout under test is 1 s, this only has to be far above it).
STUCK_S = 90


@pytest.fixture
def pg_engine():
    from tests.storage.conftest import pg_schema_engine

    with pg_schema_engine() as engine:
        db.init_db(engine)
        yield engine


@pytest.fixture
def quick_engine(pg_engine):
    """The same schema with a 1-s lock timeout: these tests are about the wait being bounded (the default of
    5 s is checked below), and a short one keeps the suite fast."""
    engine = db.make_engine(pg_engine.url.render_as_string(hide_password=False), lock_timeout_s=1)
    yield engine
    engine.dispose()


class TableLock:
    """ACCESS EXCLUSIVE on a table, held from another connection until release()."""

    def __init__(self, engine, table: str):
        self.connection = engine.connect()
        self.connection.execute(text("SET lock_timeout = 0"))
        self.connection.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))

    def release(self) -> None:
        self.connection.rollback()
        self.connection.close()


@pytest.mark.postgres
def test_a_write_to_a_locked_table_fails_within_the_lock_timeout(pg_engine, quick_engine):
    with Session(pg_engine) as session:
        conversation = repo.create_conversation(session=session, owner="alice")
    outcome: list[BaseException | object] = []

    def write() -> None:
        with Session(quick_engine) as session:
            try:
                outcome.append(repo.begin_turn(session=session, owner="alice", conversation_id=conversation.id, content="hi"))
            except BaseException as e:  # noqa: BLE001 - the test looks at what came out
                outcome.append(e)

    lock = TableLock(pg_engine, "message")
    try:
        worker = threading.Thread(target=write, daemon=True)
        worker.start()
        worker.join(STUCK_S)
        assert outcome, f"the write was still waiting for the lock after {STUCK_S} s"
    finally:
        lock.release()
        worker.join(STUCK_S)
    assert isinstance(outcome[0], StorageUnavailable), outcome[0]
    assert "busy" in str(outcome[0])
    with pg_engine.connect() as connection:  # refused means nothing written, the title neither
        assert connection.execute(text("SELECT count(*) FROM message")).scalar_one() == 0
        assert connection.execute(text("SELECT title FROM conversation")).scalar_one() == "New chat"


@pytest.mark.postgres
def test_unrelated_reads_complete_while_more_writes_than_threads_wait_on_a_lock(pg_engine, quick_engine):
    services = Services(config=AppConfig(), registry=None, engine=quick_engine, limiter=None, policy=None)  # type: ignore[arg-type]  # storage calls only: registry, limiter and policy are never reached
    threads = services.executor._max_workers
    with Session(pg_engine) as session:
        conversation = repo.create_conversation(session=session, owner="alice")
        repo.create_conversation(session=session, owner="bob", title="bob's chat")

    async def scenario() -> tuple[list[object], object]:
        writes = [
            asyncio.ensure_future(services.db(repo.begin_turn, owner="alice", conversation_id=conversation.id, content=f"q{i}"))
            for i in range(threads + 4)
        ]
        await asyncio.sleep(0)  # the writes take every thread before the read is queued
        read = await asyncio.wait_for(services.db(repo.list_conversations, owner="bob"), STUCK_S)
        return await asyncio.gather(*writes, return_exceptions=True), read

    lock = TableLock(pg_engine, "message")
    try:
        writes, read = asyncio.run(scenario())  # the read comes back while the lock is still held
    finally:
        lock.release()
        services.close()
    assert [c.title for c in read] == ["bob's chat"]
    assert writes and all(isinstance(w, StorageUnavailable) for w in writes), writes


@pytest.mark.postgres
def test_postgres_connections_carry_the_timeouts_and_keep_url_options(pg_engine):
    with pg_engine.connect() as connection:
        assert connection.execute(text("SHOW lock_timeout")).scalar_one() == "5s"
        assert connection.execute(text("SHOW statement_timeout")).scalar_one() == "15s"
        assert connection.execute(text("SHOW search_path")).scalar_one().startswith("parley_test_")
    quick = db.make_engine(pg_engine.url.render_as_string(hide_password=False), statement_timeout_s=0.2)
    try:
        with quick.connect() as connection, pytest.raises(OperationalError) as caught:
            connection.execute(text("SELECT pg_sleep(30)"))
        assert "took too long" in unavailable_message(caught.value)
    finally:
        quick.dispose()


def test_sqlite_busy_timeout_follows_the_lock_timeout(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}", lock_timeout_s=2)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA busy_timeout")).scalar_one() == 2000
    finally:
        engine.dispose()


def test_the_pool_serves_every_storage_thread(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        services = Services(config=AppConfig(), registry=None, engine=engine, limiter=None, policy=None)  # type: ignore[arg-type]  # storage calls only: registry, limiter and policy are never reached
        assert services.executor._max_workers <= engine.pool.size() + engine.pool._max_overflow - 1
        assert services.executor._max_workers == db.DB_THREADS
        services.close()
    finally:
        engine.dispose()


@pytest.mark.parametrize("bad", ["-1", "soon", "nan"])
def test_bad_timeout_settings_are_refused_with_the_variable_named(bad):
    with pytest.raises(ValueError, match="DB_LOCK_TIMEOUT"):
        db.timeouts_from_env({"DB_LOCK_TIMEOUT": bad})
    assert db.timeouts_from_env({"DB_LOCK_TIMEOUT": "2.5", "DB_STATEMENT_TIMEOUT": "0"}) == {
        "lock_timeout_s": 2.5, "statement_timeout_s": 0.0}  # fmt: skip
