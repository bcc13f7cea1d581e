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
