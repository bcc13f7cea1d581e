"""Stored summaries of a conversation's older messages (core.summaries decides when to make and use one).

A summary is keyed by the last message it covers: every path through that message shares the part it
covers, and a path that branched off earlier never sees it. It is derived data: exports leave it out,
and deleting its conversation or the branch holding that message deletes it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Field, Session, SQLModel, select

from storage.errors import InvalidInput
from storage.guard import guarded, owned_message
from storage.models import OWNER_MAX
from storage.validation import check_owner, parse_id

#: The longest summary kept (a summariser that ignores its length limit must not fill the database).
MAX_SUMMARY_CHARS = 20_000


class ContextSummary(SQLModel, table=True):
    """A summary of a conversation path's messages up to and including `covers_message_id`."""

    __tablename__ = "context_summary"
    __table_args__ = (sa.Index("ix_context_summary_conversation", "conversation_id", "covers_message_id"),
                      sa.Index("ix_context_summary_covers", "covers_message_id"))

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    owner: str = Field(max_length=OWNER_MAX)
    conversation_id: uuid.UUID = Field(foreign_key="conversation.id", ondelete="CASCADE")
    covers_message_id: uuid.UUID = Field(foreign_key="message.id", ondelete="CASCADE")
    #: How many context messages (as the model is sent them) the summary stands for.
    covered: int
    content: str = Field(sa_type=sa.Text)
    provider: str = Field(max_length=255)
    model: str = Field(max_length=255)
    #: The summariser's usage, as its provider reported it (None when it did not).
    input_tokens: int | None = None
    output_tokens: int | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC), sa_type=sa.DateTime(timezone=True))


@guarded
def summaries_on_path(*, session: Session, owner: str, conversation_id: uuid.UUID | str,
                      message_ids: Sequence[uuid.UUID]) -> list[ContextSummary]:
    """This owner's summaries of the conversation that cover a prefix ending at one of `message_ids`, newest first."""
    check_owner(owner)
    if not message_ids:
        return []
    cid = parse_id(conversation_id)
    rows = session.exec(
        select(ContextSummary)
        .where(ContextSummary.owner == owner, ContextSummary.conversation_id == cid,
               sa.column("covers_message_id").in_(list(message_ids)))
        .order_by(sa.desc(sa.column("created_at")))
    ).all()
    return list(rows)


@guarded
def add_summary(*, session: Session, owner: str, covers_message_id: uuid.UUID | str, covered: int, content: str,
                provider: str, model: str, input_tokens: int | None = None,
                output_tokens: int | None = None) -> ContextSummary:
    """Store a summary of the path up to `covers_message_id` (one of this owner's messages)."""
    check_owner(owner)
    if covered < 1 or not content.strip():
        raise InvalidInput("A summary covers at least one message and has text.")
    message = owned_message(session, owner, covers_message_id)
    row = ContextSummary(owner=owner, conversation_id=message.conversation_id, covers_message_id=message.id,
                         covered=covered, content=content[:MAX_SUMMARY_CHARS], provider=provider[:255],
                         model=model[:255], input_tokens=input_tokens, output_tokens=output_tokens)
    session.add(row)
    session.commit()
    session.refresh(row)
    return row
