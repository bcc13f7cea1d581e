"""A new SQLite database made from the schema the migrations build, without importing Alembic.

Every first start on a new SQLite file (a Hugging Face Space, a laptop, each test and bench app) ran
all the migrations through Alembic: a tenth of a second of start-up and 9 MB of resident memory for
modules (Alembic, Mako, Pygments) that are never used again. `sqlite_schema.sql` holds the statements
SQLite itself stores for a database migrated to HEAD_REVISION, read back from `sqlite_master`; a new,
empty file gets those statements in one write transaction instead. A database with anything in it
still goes through Alembic, as does PostgreSQL.

The file is written by `python -m storage.sqlite_schema` and checked by tests/storage/test_sqlite_schema.py
against a database the migrations built, so it cannot drift from them: a new migration fails that test
until the file is written again.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from sqlalchemy import Engine

SCHEMA_FILE = Path(__file__).resolve().parent / "sqlite_schema.sql"
#: Statements in the file are separated by this line (a trigger's body has semicolons of its own).
SEPARATOR = "\n-- statement --\n"
_REVISION = "-- revision: "
#: Created in this order: triggers need their tables; indexes and views are created after them too.
_KINDS = ("table", "index", "view", "trigger")
#: The tables an FTS5 virtual table makes for itself (https://sqlite.org/fts5.html, "shadow tables").
_FTS5_TABLES = ("data", "idx", "content", "docsize", "config")


def dump(connection: sqlite3.Connection) -> list[str]:
    """The statements that build `connection`'s schema, as SQLite stored them (FTS5's own tables left out:
    its virtual table makes them)."""
    rows = connection.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    virtual = [name for kind, name, sql in rows if kind == "table" and sql.upper().startswith("CREATE VIRTUAL TABLE")]
    shadow = {name for kind, name, _ in rows if kind == "table" and any(name == f"{v}_{part}" for v in virtual for part in _FTS5_TABLES)}
    # sqlite_master's order is creation order; a table rebuilt by a migration moves, so sort by kind first.
    return [sql for kind in _KINDS for k, name, sql in rows if k == kind and name not in shadow]


def render(statements: list[str], revision: str) -> str:
    return f"{_REVISION}{revision}\n-- Written by `python -m storage.sqlite_schema`; do not edit.{SEPARATOR}" + SEPARATOR.join(statements) + "\n"


def read(text: str) -> tuple[str, list[str]]:
    """(revision, statements) of a schema file's text."""
    head, *statements = text.split(SEPARATOR)
    revision = head.splitlines()[0].removeprefix(_REVISION).strip()
    return revision, [s.strip() for s in statements if s.strip()]


def create(engine: Engine, revision: str) -> bool:
    """Build an empty SQLite database from the schema file, stamped `revision`; False (nothing done) when the
    file is for another revision or the database is not empty (the caller then runs the migrations)."""
    try:
        file_revision, statements = read(SCHEMA_FILE.read_text(encoding="utf-8"))
    except OSError:
        return False
    if file_revision != revision:
        return False
    raw = engine.raw_connection()
    try:
        connection: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]  # pysqlite's
        connection.commit()
        # IMMEDIATE: a second process starting on the same new file waits here, then finds it built.
        connection.execute("BEGIN IMMEDIATE")
        try:
            if connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                connection.rollback()
                return False
            for statement in statements:
                connection.execute(statement)
            connection.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (revision,))
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
    finally:
        raw.close()
    return True


def main() -> None:
    """Migrate a new database in a temporary folder with Alembic and write its schema to SCHEMA_FILE."""
    import tempfile

    from storage.db import HEAD_REVISION, make_engine, migrate

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "schema.db"
        engine = make_engine(f"sqlite:///{path}")
        migrate(engine, "head")
        engine.dispose()
        with sqlite3.connect(path) as connection:
            text = render(dump(connection), HEAD_REVISION)
        connection.close()
    SCHEMA_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_FILE} ({HEAD_REVISION})", file=sys.stderr)


if __name__ == "__main__":
    main()
