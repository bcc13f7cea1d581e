"""Engines and schema: pick the database from DATABASE_URL, tune SQLite, run migrations.

Usage (synchronous; async callers run these in a worker thread, e.g. `anyio.to_thread.run_sync`)::

    engine = make_engine()            # DATABASE_URL, else a SQLite file under /data or ./data
    init_db(engine)                   # Alembic upgrade to head; safe on every start-up
    with Session(engine) as session:  # one short session per request / event handler
        repository.mark_interrupted(session=session)
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from storage.errors import StorageUnavailable
from storage.sqlite_writes import connection_factory

if TYPE_CHECKING:
    from alembic.config import Config

#: The newest migration revision. init_db skips importing Alembic when the database is already
#: there (a test checks this matches Alembic's own head).
HEAD_REVISION = "0011"

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SPACES_DATA_DIR = Path("/data")  # Hugging Face Spaces persistent storage, when enabled
#: How long a statement may wait for a lock (SQLite: the busy timeout) before it fails with
#: StorageUnavailable, and how long any PostgreSQL statement may run. Without them one table lock
#: held elsewhere kept a request (and its database thread) waiting until the lock went.
LOCK_TIMEOUT_S = 5.0
STATEMENT_TIMEOUT_S = 15.0
SQLITE_BUSY_TIMEOUT_MS = int(LOCK_TIMEOUT_S * 1000)
#: Threads that run storage calls (core.services) and connections the pool keeps for them: every
#: thread must find a connection, or a call waits on the pool instead of the database.
DB_THREADS = 16
#: Connections beyond DB_THREADS for the heartbeat, start-up and other direct sessions.
POOL_OVERFLOW = 4
#: Seconds a call waits for a free pooled connection before it fails (sqlalchemy TimeoutError).
POOL_TIMEOUT_S = 10.0
# Any constant will do: it only has to be the same in every process that migrates this database.
_PG_MIGRATION_LOCK = 0x5061726C6579  # "Parley"


def default_url() -> str:
    """DATABASE_URL, else a SQLite file under /data (Hugging Face persistent storage) or ./data."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        return url
    spaces = SPACES_DATA_DIR
    folder = spaces if spaces.is_dir() and os.access(spaces, os.W_OK) else Path("data").resolve()
    return f"sqlite:///{folder / 'parley.db'}"


def normalize_url(url: str) -> str:
    """Map postgres:// and postgresql:// (and psycopg2) URLs to the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(
    url: str | None = None,
    *,
    busy_timeout_ms: int | None = None,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
    statement_timeout_s: float = STATEMENT_TIMEOUT_S,
    **kwargs: Any,
) -> Engine:
    """An engine for `url` (default: `default_url()`) whose every wait is bounded.

    SQLite gets WAL, foreign keys and a busy timeout (default: the lock timeout); PostgreSQL gets
    `lock_timeout` and `statement_timeout` on each connection (0 turns one off). The pool holds a
    connection for each of the DB_THREADS storage threads and gives up after POOL_TIMEOUT_S.
    Extra keyword arguments go to `sqlalchemy.create_engine` (`connect_args` are merged).
    """
    url = normalize_url(url or default_url())
    parsed = make_url(url)
    lock_timeout_s = _seconds(lock_timeout_s, "lock timeout")
    statement_timeout_s = _seconds(statement_timeout_s, "statement timeout")
    if busy_timeout_ms is None:
        # SQLite has no "wait forever" setting; 0 there would mean "never wait", so take a day.
        busy_timeout_ms = int(lock_timeout_s * 1000) if lock_timeout_s else 86_400_000
    if "poolclass" not in kwargs and not _memory_sqlite(parsed):
        kwargs.setdefault("pool_size", DB_THREADS)
        kwargs.setdefault("max_overflow", POOL_OVERFLOW)
        kwargs.setdefault("pool_timeout", POOL_TIMEOUT_S)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        # Gradio calls handlers from worker threads; each session still uses one connection at a time.
        connect_args = {"check_same_thread": False, "timeout": busy_timeout_ms / 1000, **kwargs.pop("connect_args", {})}
        if database and database != ":memory:" and serial_writes_from_env():
            # Writers in this process wait for each other as long as SQLite would let them wait.
            connect_args.setdefault("factory", connection_factory(database, busy_timeout_ms / 1000))
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", functools.partial(_sqlite_on_connect, busy_timeout_ms=busy_timeout_ms))
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if parsed.get_backend_name() == "postgresql":
        # psycopg prepares a statement after 5 runs, and PostgreSQL may then switch to a generic
        # plan that ignores the owner's selectivity: a search for a common word went from 1 ms to
        # 40 ms that way. Planning each query is cheap next to that.
        connect_args = {"prepare_threshold": None, **kwargs.get("connect_args", {})}
        # Startup options cost no round trip and, unlike a SET, survive the pool's rollbacks.
        # Ours go first so that timeouts already in the URL's or caller's options win.
        timeouts = f"-c lock_timeout={_ms(lock_timeout_s)} -c statement_timeout={_ms(statement_timeout_s)}"
        extra = connect_args.get("options", parsed.query.get("options", ""))
        extra = " ".join(extra) if isinstance(extra, tuple | list) else str(extra)
        connect_args["options"] = f"{timeouts} {extra}".strip()
        kwargs["connect_args"] = connect_args
    return create_engine(url, **kwargs)


def serial_writes_from_env() -> bool:
    """SQLite writers queue on a lock in this process (storage/sqlite_writes.py) unless
    PARLEY_SQLITE_SERIAL_WRITES=off, which is there to measure the difference (bench.cpu --ab)."""
    return os.environ.get("PARLEY_SQLITE_SERIAL_WRITES", "").strip().lower() not in ("off", "0", "false", "no")


def db_threads(engine: Engine, wanted: int = DB_THREADS) -> int:
    """Threads for storage calls: `wanted`, but no more than the engine's pool can serve at once."""
    size, overflow = getattr(engine.pool, "size", None), getattr(engine.pool, "_max_overflow", None)
    if not callable(size) or not isinstance(overflow, int) or overflow < 0:
        return wanted  # NullPool, StaticPool or an unbounded overflow never make a thread wait
    capacity = size() + max(overflow, 0)
    return int(max(1, min(wanted, capacity - 1 if capacity > 1 else capacity)))


def timeouts_from_env(env: Mapping[str, str]) -> dict[str, float]:
    """make_engine's timeouts from DB_LOCK_TIMEOUT and DB_STATEMENT_TIMEOUT (seconds; 0 = none)."""
    settings = {}
    for name, key in (("DB_LOCK_TIMEOUT", "lock_timeout_s"), ("DB_STATEMENT_TIMEOUT", "statement_timeout_s")):
        raw = (env.get(name) or "").strip()
        if raw:
            try:
                settings[key] = _seconds(float(raw), name)
            except ValueError as e:
                raise ValueError(f"{name} must be a number of seconds (0 for no limit), got {raw!r}") from e
    return settings


def _seconds(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"The {what} must be a number of seconds from 0, got {value!r}")
    return float(value)


def _ms(seconds: float) -> int:
    # PostgreSQL reads a bare number as milliseconds; 0 means no limit there too.
    return max(int(round(seconds * 1000)), 1) if seconds else 0


def _memory_sqlite(parsed: URL) -> bool:
    # An in-memory database uses a single-connection pool that takes no size arguments.
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def _sqlite_on_connect(dbapi_connection: Any, _record: Any, *, busy_timeout_ms: int) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable across application crashes in WAL mode; only a power cut can lose
        # the last commits, and it keeps an append well under a millisecond.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    finally:
        cursor.close()


def alembic_config() -> Config:
    """An Alembic config pointing at storage/migrations (no alembic.ini needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database behind `engine` to `revision` (tests use this for older revisions)."""
    from alembic import command

    config = alembic_config()
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # A migration may rebuild an index on a big table, and a second replica waits here
                # for the first one's migration: neither is a request, so neither has a time limit.
                connection.execute(text("SET LOCAL lock_timeout = 0"))
                connection.execute(text("SET LOCAL statement_timeout = 0"))
                # Two processes starting together must not both create the tables.
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except OperationalError as e:
        raise StorageUnavailable(f"Could not reach the database to prepare it: {_short(e)}") from e


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, read with plain SQL (None for a new database)."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except OperationalError:
        return None  # no such table yet (or the database is not there: migrate() will say so)
    except Exception:  # noqa: BLE001 - e.g. PostgreSQL's UndefinedTable: let migrate() decide
        return None


def init_db(engine: Engine) -> None:
    """Bring the schema to the newest revision, keeping existing data. Run once at start-up.

    An up-to-date database is recognised without importing Alembic (a tenth of a second of start-up), and a
    new SQLite file is built from the migrated schema without it too (storage/sqlite_schema.py).
    """
    revision = current_revision(engine)
    if revision == HEAD_REVISION:
        return
    if revision is None and engine.dialect.name == "sqlite" and not _memory_sqlite(engine.url):
        from storage import sqlite_schema

        if sqlite_schema.create(engine, HEAD_REVISION):
            return
    migrate(engine, "head")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that is closed afterwards; repository functions commit their own writes."""
    with Session(engine) as session:
        yield session


def _short(error: BaseException) -> str:
    return str(getattr(error, "orig", None) or error).strip().splitlines()[0][:300]
