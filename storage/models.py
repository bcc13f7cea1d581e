"""SQLModel tables and the data shapes the repository returns (Base / Create / Public split).

The tables here mirror the head Alembic revision; the migrations, not `create_all`, build the
database. Columns the ORM never writes (PostgreSQL's generated `search` tsvector, SQLite's FTS5
table) live only in the migrations.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import ConfigDict
from sqlmodel import JSON, Field, SQLModel

# Limits shared by validation, the UI and the import checker.
TITLE_MAX = 200
AUTO_TITLE_MAX = 80
OWNER_MAX = 255
NAME_MAX = 200  # provider, model and model version names
MAX_CONTENT_CHARS = 1_000_000
DEFAULT_TITLE = "New chat"

Role = Literal["system", "user", "assistant", "tool"]
Feedback = Literal["like", "dislike"]
#: finish_reason values; "pending" marks a reply still streaming, "interrupted" one the server lost.
FINISH_REASONS: frozenset[str] = frozenset(
    {
        "stop",
        "length",
        "tool_calls",
        "content_filter",
        "refusal",
        "error",
        "cancelled",
        "truncated",
        "interrupted",
    }
)
PENDING = "pending"
INTERRUPTED = "interrupted"


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


# --- conversation ---------------------------------------------------------------------------


class ConversationBase(SQLModel):
    title: str = Field(default=DEFAULT_TITLE, min_length=1, max_length=TITLE_MAX)
    # The model ("provider:model"), system prompt and parameters the conversation last used.
    model: str | None = Field(default=None, max_length=NAME_MAX)
    system_prompt: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS)
    params: dict[str, Any] | None = Field(default=None, sa_type=JSON(none_as_null=True))
    pinned: bool = False
    archived: bool = False


class ConversationCreate(ConversationBase):
    """What a caller may set when creating a conversation (validated before any write)."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]


class Conversation(ConversationBase, table=True):
    __tablename__ = "conversation"
    __table_args__ = (
        # list_conversations: WHERE owner=? AND archived=? ORDER BY pinned DESC, updated_at DESC, id DESC
        sa.Index("ix_conversation_owner_list", "owner", "archived", "pinned", "updated_at", "id"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    owner: str = Field(max_length=OWNER_MAX)
    created_at: datetime = Field(default_factory=utcnow)
    # Last activity (a message added or finished); renaming, pinning and archiving leave it alone.
    updated_at: datetime = Field(default_factory=utcnow)


class ConversationPublic(ConversationBase):
    id: uuid.UUID
    created_at: datetime
    updated_at: datetime


# --- message --------------------------------------------------------------------------------


class ToolCallRecord(SQLModel):
    """One tool call of an assistant reply, with its result (stored in message.tool_calls)."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    id: str = Field(max_length=NAME_MAX)
    name: str = Field(max_length=NAME_MAX)
    arguments: str = Field(default="{}", max_length=100_000)
    result: str | None = Field(default=None, max_length=MAX_CONTENT_CHARS)
    error: str | None = Field(default=None, max_length=100_000)
    duration_ms: int | None = Field(default=None, ge=0)


class MessageBase(SQLModel):
    position: int = Field(ge=0)
    role: str = Field(max_length=16)
    content: str = Field(default="", sa_type=sa.Text)
    reasoning: str | None = Field(default=None, sa_type=sa.Text)
    # Assistant replies only: who answered, with what, and how it went.
    provider: str | None = Field(default=None, max_length=NAME_MAX)
    model: str | None = Field(default=None, max_length=NAME_MAX)
    model_version: str | None = Field(default=None, max_length=NAME_MAX)
    params: dict[str, Any] | None = Field(default=None, sa_type=JSON(none_as_null=True))
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    ttft_ms: int | None = None
    duration_ms: int | None = None
    finish_reason: str | None = Field(default=None, max_length=32)
    error: str | None = Field(default=None, sa_type=sa.Text)
    feedback: str | None = Field(default=None, max_length=8)
    tool_calls: list[dict[str, Any]] | None = Field(default=None, sa_type=JSON(none_as_null=True))
    created_at: datetime = Field(default_factory=utcnow)


class Message(MessageBase, table=True):
    __tablename__ = "message"
    __table_args__ = (
        sa.UniqueConstraint("conversation_id", "position", name="uq_message_conversation_position"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    conversation_id: uuid.UUID = Field(foreign_key="conversation.id", ondelete="CASCADE")
    # Copied from the conversation (owners never change): lets search filter by owner inside
    # the full-text index and lets SQLite's FTS triggers delete rows without a join.
    owner: str = Field(max_length=OWNER_MAX, index=True)


class MessagePublic(MessageBase):
    id: uuid.UUID
    conversation_id: uuid.UUID


class ConversationDetail(SQLModel):
    """One conversation with its messages in order."""

    conversation: ConversationPublic
    messages: list[MessagePublic]


class TurnIds(SQLModel):
    """What begin_turn created: the saved user message and the pending assistant placeholder."""

    conversation_id: uuid.UUID
    user_message_id: uuid.UUID | None
    user_position: int | None
    assistant_message_id: uuid.UUID
    assistant_position: int


class SearchHit(SQLModel):
    """A message that matched a search; `snippet` is HTML-escaped with matches in <mark>…</mark>."""

    conversation_id: uuid.UUID
    title: str
    message_id: uuid.UUID
    role: str
    snippet: str
    created_at: datetime


class ModelStats(SQLModel):
    """Usage of one provider+model over a period (assistant replies that finished)."""

    provider: str
    model: str
    count: int
    input_tokens: int
    output_tokens: int
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    error_rate: float
    tokens_per_second: float | None
