"""Alembic environment: run against the connection init_db hands over (no alembic.ini, no URL here)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from storage.db import default_url, normalize_url


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        # Only the `alembic` command line gets here (e.g. `alembic revision`); the app always
        # passes its own connection through storage.db.migrate.
        engine = create_engine(normalize_url(default_url()))
        with engine.begin() as connection:
            _run(connection)
        return
    _run(connection)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=None,  # revisions are written by hand; the models mirror head
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
