"""The storage error hierarchy; every message says what went wrong in words a user can act on."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every failure the storage layer reports. The UI catches only this."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFound(StorageError):
    """The id is unknown, malformed, or belongs to another owner (these look the same on purpose)."""


class InvalidInput(StorageError):
    """A value was refused before anything was written (too long, wrong type, bad import file)."""


class Conflict(StorageError):
    """Two writers raced on the same conversation; trying again will usually succeed."""


class StorageUnavailable(StorageError):
    """The database could not be reached or is busy (wraps SQLAlchemy's OperationalError)."""


# SQLSTATEs of PostgreSQL's lock_timeout and statement_timeout (storage.db sets both).
_LOCK_NOT_AVAILABLE = "55P03"
_QUERY_CANCELED = "57014"


def unavailable_message(error: BaseException) -> str:
    """What to tell the user when the database failed or timed out (from a SQLAlchemy error)."""
    cause = getattr(error, "orig", None) or error
    sqlstate = getattr(cause, "sqlstate", None)
    text = str(cause).strip()
    if sqlstate == _LOCK_NOT_AVAILABLE or "database is locked" in text:
        return "The database is busy (a lock is held elsewhere), so nothing was changed; try again shortly."
    if sqlstate == _QUERY_CANCELED:
        return "The database took too long to answer, so nothing was changed; try again shortly."
    first = text.splitlines()[0][:200] if text else type(cause).__name__
    return f"The database is unavailable or busy; try again shortly ({first})."


POOL_EXHAUSTED = "Every database connection is in use; try again shortly."
