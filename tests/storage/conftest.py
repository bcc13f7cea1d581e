"""Storage fixtures: every test runs on a SQLite file and, when TEST_DATABASE_URL is set, on PostgreSQL.

PostgreSQL tests run in a schema created for this test session (search_path set through the
connection's options) and dropped at the end, so nothing is left behind in the database.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from storage.db import init_db, make_engine, normalize_url

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
PG_SKIP = "TEST_DATABASE_URL is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"


def pg_url() -> str | None:
    url = os.environ.get("TEST_DATABASE_URL", "").strip()
    return normalize_url(url) if url else None


@contextmanager
def pg_schema_engine() -> Iterator[Engine]:
    """An engine whose search_path is a brand-new schema, dropped (with everything in it) afterwards."""
    url = pg_url()
    if url is None:
        pytest.skip(PG_SKIP)
    schema = f"parley_test_{uuid.uuid4().hex[:12]}"
    admin = make_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(False))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (migrating once keeps the suite fast)."""
    path = tmp_path_factory.mktemp("storage") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    init_db(engine)
    engine.dispose()  # closing the last connection checkpoints and removes the WAL
    return path


@pytest.fixture(scope="session")
def pg_session_engine() -> Iterator[Engine]:
    with pg_schema_engine() as engine:
        init_db(engine)
        yield engine


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Iterator[Engine]:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "parley.db"
        shutil.copy(sqlite_template, path)
        engine = make_engine(f"sqlite:///{path}")
        yield engine
        engine.dispose()
        return
    engine = request.getfixturevalue("pg_session_engine")
    yield engine
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE conversation, message, comparison, comparison_pane, comparison_vote, replica, message_attachment, attachment, "
                                "share_link CASCADE"))  # CASCADE: and every table that refers to these (summaries, verdicts)


@pytest.fixture(params=BACKENDS)
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A database with no tables at all (for migration tests)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
        yield engine
        engine.dispose()
        return
    with pg_schema_engine() as engine:
        yield engine


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session


@pytest.fixture
def count_rows(engine: Engine) -> Callable[[], tuple[int, int]]:
    """(conversations, messages) currently stored, read on a fresh connection."""

    def count() -> tuple[int, int]:
        with engine.connect() as connection:
            conversations = connection.execute(text("SELECT count(*) FROM conversation")).scalar_one()
            messages = connection.execute(text("SELECT count(*) FROM message")).scalar_one()
        return conversations, messages

    return count
