"""One writer at a time per SQLite file, queued in Python instead of in SQLite's busy handler.

SQLite lets one connection write at a time. When a second one tries, its busy handler sleeps and
polls (1, 2, 5, 10 ... then 100 ms between tries), so under a burst of writes, say 100 users pressing
Enter together, each saving their question, the lock is mostly free while the waiters sleep: a
profile of such a burst found the storage threads in `usleep` for nearly all of their time, and
questions were saved seconds late. Here each connection takes a per-file `threading.Lock` before the
statement that opens its write transaction and gives it back at commit, rollback or close, so the
next writer starts the moment the last one ends. SQLite's own locking is untouched and still
guards other processes (two replicas on one file wait in the busy handler as before).

Python's sqlite3 (legacy transaction control, as SQLAlchemy's pysqlite dialect uses it) opens a
transaction implicitly before INSERT, UPDATE, DELETE and REPLACE, and only then: reads never take
the lock, and in WAL mode they never wait for a writer either.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Statements that write: the ones sqlite3 opens a transaction for, DDL (migrations, which run
# outside a transaction) and an explicit write transaction.
_WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|BEGIN\s+(IMMEDIATE|EXCLUSIVE))\b", re.IGNORECASE)

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(database: str) -> threading.Lock:
    # Engines on the same file (the app's and a test's, say) share one lock.
    key = str(Path(database).expanduser().resolve())
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def connection_factory(database: str, timeout_s: float) -> type[sqlite3.Connection]:
    """A `sqlite3.Connection` subclass (for `connect(factory=...)`) whose writers queue on one lock."""
    return type("SerialWriteConnection", (SerialWriteConnection,), {"write_lock": _lock_for(database), "lock_timeout_s": timeout_s})


class SerialWriteCursor(sqlite3.Cursor):
    def execute(self, sql: str, parameters: Any = (), /) -> SerialWriteCursor:
        return self._writing(super().execute, sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> SerialWriteCursor:
        return self._writing(super().executemany, sql, seq_of_parameters)

    def _writing(self, run: Callable[[str, Any], Any], sql: str, parameters: Any) -> SerialWriteCursor:
        """Run one statement with the write lock taken first when it writes, and given back once no transaction is open."""
        connection: SerialWriteConnection = self.connection  # type: ignore[assignment]  # our factory made it
        connection.take_for(sql)
        try:
            run(sql, parameters)
        finally:
            connection.release_if_done()
        return self


class SerialWriteConnection(sqlite3.Connection):
    write_lock: threading.Lock
    lock_timeout_s: float
    _holding = False

    def cursor(self, factory: Any = SerialWriteCursor) -> Any:
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:
        return self.cursor().executemany(sql, parameters)

    def take_for(self, sql: str) -> None:
        """Take the write lock before `sql` if it writes and this connection has not got it yet."""
        if self._holding or not _WRITE.match(sql):
            return
        # Failing as SQLite's busy timeout does, so callers see one error (StorageUnavailable, storage/guard.py).
        if not self.write_lock.acquire(timeout=self.lock_timeout_s):
            raise sqlite3.OperationalError("database is locked")
        self._holding = True

    def release_if_done(self) -> None:
        # The statement may have failed before the transaction opened, run outside one (DDL), or ended it
        # (a COMMIT or ROLLBACK sent as SQL).
        if self._holding and not self.in_transaction:
            self._release()

    def _release(self) -> None:
        if self._holding:
            self._holding = False
            self.write_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.release_if_done()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.release_if_done()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release()

    def __del__(self) -> None:
        # A connection dropped mid-transaction must not keep every other writer waiting.
        self._release()
