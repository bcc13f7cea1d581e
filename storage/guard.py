"""The one error guard and the owned-row helpers every repository module shares.

`guarded` wraps each public repository function: on any failure it rolls the caller's session back
and turns database exceptions into the StorageError hierarchy (storage/errors.py), so no raw
SQLAlchemy exception leaves storage and a failed call leaves the session usable. The `owned_*`
helpers read one row of one owner: another owner's id behaves exactly like an unknown one (NotFound).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar, cast

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session, select

from storage import blind
from storage.errors import POOL_EXHAUSTED, Conflict, InvalidInput, NotFound, StorageError, StorageUnavailable, unavailable_message
from storage.models import KIND_CHAT, Conversation, ConversationPublic, Message, MessagePublic
from storage.validation import parse_id

P = ParamSpec("P")
R = TypeVar("R")


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Roll back on any failure and turn database exceptions into StorageErrors."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        session = kwargs.get("session")
        try:
            return fn(*args, **kwargs)
        except StorageError:
            rollback(session)
            raise
        except ValidationError as e:
            rollback(session)
            raise InvalidInput(str(e).splitlines()[0]) from e
        except IntegrityError as e:
            rollback(session)
            raise Conflict("The conversation changed while this was being saved; try again.") from e
        except (OperationalError, InterfaceError) as e:
            rollback(session)  # lock_timeout and statement_timeout end up here too
            raise StorageUnavailable(unavailable_message(e)) from e
        except PoolTimeout as e:
            rollback(session)
            raise StorageUnavailable(POOL_EXHAUSTED) from e
        except DataError as e:
            rollback(session)
            raise InvalidInput(f"The database refused a value: {first_line(e)}") from e

    return wrapper


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE touched (session.execute types its result as a plain Result)."""
    return int(cast(CursorResult[Any], result).rowcount)


def first_line(error: Exception) -> str:
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


def rollback(session: object) -> None:
    if isinstance(session, Session):
        try:
            session.rollback()
        except Exception:  # noqa: BLE001 - the original error is the one worth reporting
            pass


# Built once: nearly every call that names a conversation reads it through here.
_OWNED_CONVERSATION = select(Conversation).where(
    Conversation.id == sa.bindparam("c_id"), Conversation.owner == sa.bindparam("c_owner")
)


def owned_conversation(session: Session, owner: str, conversation_id: object) -> Conversation:
    cid = parse_id(conversation_id, "conversation")
    row = session.exec(_OWNED_CONVERSATION, params={"c_id": cid, "c_owner": owner}).first()
    if row is None:
        raise NotFound(f"No conversation with id {str(cid)!r}.")
    # Only a pane can belong to a comparison, so chats (the hot path) skip the secrecy query.
    if row.kind != KIND_CHAT and session.execute(sa.select(blind.secret_conversation(row.id))).scalar_one():
        raise NotFound(blind.HIDDEN_MESSAGE)
    return row


def owned_message(session: Session, owner: str, message_id: object) -> Message:
    mid = parse_id(message_id, "message")
    row = session.exec(select(Message).where(Message.id == mid, Message.owner == owner)).first()
    if row is None:
        raise NotFound(f"No message with id {str(mid)!r}.")
    return row


def conversation_public(row: Conversation) -> ConversationPublic:
    return ConversationPublic.model_validate(row)


def message_public(row: Message) -> MessagePublic:
    return MessagePublic.model_validate(row)


def aware(moment: datetime | None, what: str) -> datetime | None:
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        raise InvalidInput(f"The {what} must be a date and time.")
    return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment.astimezone(UTC)

