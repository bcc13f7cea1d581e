"""Fixtures of the use-case tests: a migrated database on each backend, and the services over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from chat.registry import Registry, Settings
from core.config import AppConfig
from core.services import Services
from storage.db import init_db, make_engine
from tests.storage.conftest import BACKENDS, pg_schema_engine


@pytest.fixture(scope="module")
def pg_engine() -> Iterator[sa.Engine]:
    with pg_schema_engine() as engine:
        init_db(engine)
        yield engine


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    """SQLite in a fresh file, or this module's PostgreSQL schema emptied after the test."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'core.db'}")
        init_db(engine)
        yield engine
        engine.dispose()
        return
    engine = request.getfixturevalue("pg_engine")
    yield engine
    with engine.begin() as connection:
        connection.execute(sa.text("TRUNCATE conversation, message, comparison, comparison_pane, comparison_vote, replica, message_attachment, attachment, "
                                   "share_link CASCADE"))  # CASCADE: and every table that refers to these (summaries, verdicts)


@pytest.fixture
def services(engine: sa.Engine) -> Iterator[Services]:
    env: dict[str, str] = {}  # the offline demo provider only
    built = Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env)), engine)
    yield built
    built.close()
