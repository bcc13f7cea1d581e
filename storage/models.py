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
INSTANCE_ID_MAX = 64
MAX_CONTENT_CHARS = 1_000_000
#: Attachments: hard ceilings of the store itself. The settings that users meet (core.config:
#: MAX_FILE_MB, MAX_FILES, ...) are lower; these only keep a row and a message within sane bounds.
ATTACHMENT_NAME_MAX = 200
MIME_MAX = 100
MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024
MAX_MESSAGE_ATTACHMENTS = 100
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
#: conversation.kind values
KIND_CHAT = "chat"
KIND_COMPARE_PANE = "compare_pane"
CONVERSATION_KINDS: frozenset[str] = frozenset({KIND_CHAT, KIND_COMPARE_PANE})
#: compare mode: panes per run, and what a vote may say
MIN_PANES = 2
MAX_PANES = 4
Verdict = Literal["slot", "tie", "both_bad"]
VERDICTS: frozenset[str] = frozenset({"slot", "tie", "both_bad"})


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def table_of(model: type[SQLModel]) -> sa.Table:
    """The Core table of a `table=True` model, typed (SQLModel leaves `__table__` untyped for mypy)."""
    table = model.__table__  # type: ignore[attr-defined]  # set by SQLAlchemy's declarative mapping at class creation
    assert isinstance(table, sa.Table), f"{model.__name__} is not a table model"
    return table


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

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]  # SQLModel types it as its own SQLModelConfig; a ConfigDict is what it reads


class Conversation(ConversationBase, table=True):
    __tablename__ = "conversation"
    __table_args__ = (
        # list_conversations: WHERE owner=? AND kind=? AND archived=? ORDER BY pinned DESC, updated_at DESC, id DESC
        sa.Index("ix_conversation_owner_list", "owner", "kind", "archived", "pinned", "updated_at", "id"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    owner: str = Field(max_length=OWNER_MAX)
    # "chat", or "compare_pane" for the hidden per-pane conversations of compare mode (kept out of
    # the sidebar list). Not in ConversationBase: exports and imports are of chats only.
    kind: str = Field(default=KIND_CHAT, max_length=16, sa_column_kwargs={"server_default": KIND_CHAT})
    created_at: datetime = Field(default_factory=utcnow)
    # Last activity (a message added or finished); renaming, pinning and archiving leave it alone.
    updated_at: datetime = Field(default_factory=utcnow)
    # The last message of the path shown (storage/tree.py). NULL: the newest message; the
    # conversation's own id: nothing shown. No foreign key: message already cascades from
    # conversation, and a second, circular one would make either row impossible to delete first.
    current_leaf_id: uuid.UUID | None = None


class ConversationPublic(ConversationBase):
    id: uuid.UUID
    created_at: datetime
    updated_at: datetime


# --- message --------------------------------------------------------------------------------


class ToolCallRecord(SQLModel):
    """One tool call of an assistant reply, with its result (stored in message.tool_calls)."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]  # SQLModel types it as its own SQLModelConfig; a ConfigDict is what it reads

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
    # The rest of the usage contract (chat.types.Usage): cached_input_tokens and cache_write_tokens are
    # parts of input_tokens; usage_estimated is True for Parley's estimate, False for the provider's
    # figures, None for replies saved before it was recorded.
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    usage_estimated: bool | None = None
    ttft_ms: int | None = None
    duration_ms: int | None = None
    finish_reason: str | None = Field(default=None, max_length=32)
    error: str | None = Field(default=None, sa_type=sa.Text)
    feedback: str | None = Field(default=None, max_length=8)
    tool_calls: list[dict[str, Any]] | None = Field(default=None, sa_type=JSON(none_as_null=True))
    # The reproducibility card (core/repro.py), replies only; None for replies saved before 0011 and for
    # providers that give no request id. Nothing secret: an id, a package version, a 16-hex-digit hash.
    request_id: str | None = Field(default=None, max_length=200)
    sdk_version: str | None = Field(default=None, max_length=64)
    system_prompt_sha256: str | None = Field(default=None, max_length=16)
    created_at: datetime = Field(default_factory=utcnow)


class Message(MessageBase, table=True):
    __tablename__ = "message"
    __table_args__ = (
        sa.UniqueConstraint("conversation_id", "position", name="uq_message_conversation_position"),
        # Only replies still streaming: the replica sweep reads these every heartbeat.
        sa.Index(
            "ix_message_pending_instance",
            "instance_id",
            sqlite_where=sa.text("finish_reason = 'pending'"),
            postgresql_where=sa.text("finish_reason = 'pending'"),
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    conversation_id: uuid.UUID = Field(foreign_key="conversation.id", ondelete="CASCADE")
    # The message this one follows (NULL for a root); siblings are the versions Retry and Edit
    # add. `position` is creation order, so it grows along every path (storage/tree.py). No ON
    # DELETE CASCADE: see migration 0008 (a branch is deleted whole, in one statement).
    parent_id: uuid.UUID | None = Field(default=None, foreign_key="message.id", index=True)
    # Copied from the conversation (owners never change): lets search filter by owner inside
    # the full-text index and lets SQLite's FTS triggers delete rows without a join.
    owner: str = Field(max_length=OWNER_MAX, index=True)
    # The app process (replica.id) streaming this reply while it is pending; other replicas mark
    # it interrupted only once that process stops sending heartbeats.
    instance_id: str | None = Field(default=None, max_length=INSTANCE_ID_MAX)
    # How many files the message links (message_attachment rows). Read with the message itself, so
    # opening a chat without files costs no attachment query at all.
    attachment_count: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


# --- attachments ----------------------------------------------------------------------------
#
# A file's bytes are stored once per owner (deduplicated by content hash) in `attachment`; each
# message that carries it has a `message_attachment` link with the name it was given there.


class Attachment(SQLModel, table=True):
    __tablename__ = "attachment"
    __table_args__ = (sa.UniqueConstraint("owner", "sha256", name="uq_attachment_owner_sha256"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    owner: str = Field(max_length=OWNER_MAX)
    sha256: str = Field(max_length=64)
    mime: str = Field(max_length=MIME_MAX)
    size: int
    width: int | None = None
    height: int | None = None
    pages: int | None = None
    #: A text file's text, or a PDF's extracted text (None when it has none).
    text: str | None = Field(default=None, sa_type=sa.Text)
    data: bytes = Field(sa_type=sa.LargeBinary)
    created_at: datetime = Field(default_factory=utcnow)


class MessageAttachment(SQLModel, table=True):
    __tablename__ = "message_attachment"

    message_id: uuid.UUID = Field(foreign_key="message.id", ondelete="CASCADE", primary_key=True)
    position: int = Field(primary_key=True, ge=0)
    # No ON DELETE: the database refuses to delete an attachment a message still links.
    attachment_id: uuid.UUID = Field(foreign_key="attachment.id", index=True)
    name: str = Field(max_length=ATTACHMENT_NAME_MAX)


class AttachmentRef(SQLModel):
    """A file of a message as the chat shows it: no bytes (get_attachment reads those)."""

    id: uuid.UUID
    name: str
    mime: str
    size: int
    sha256: str
    width: int | None = None
    height: int | None = None
    pages: int | None = None


class AttachmentData(AttachmentRef):
    """A stored file with its bytes and its text (a text file's, or a PDF's extracted text)."""

    text: str | None = None
    data: bytes = Field(default=b"", repr=False)


class MessagePublic(MessageBase):
    id: uuid.UUID
    conversation_id: uuid.UUID
    parent_id: uuid.UUID | None = None
    #: The files of a user message, in the order given.
    attachments: list[AttachmentRef] = Field(default_factory=list)


#: The message columns a MessagePublic is read from (its attachments come from their own tables).
MESSAGE_PUBLIC_COLUMNS: tuple[str, ...] = tuple(name for name in MessagePublic.model_fields if name != "attachments")


class ConversationDetail(SQLModel):
    """One conversation with the messages of its current path, root first (storage/tree.py)."""

    conversation: ConversationPublic
    messages: list[MessagePublic]
    #: The last message of the path (None: the path is empty).
    current_leaf_id: uuid.UUID | None = None
    #: For each message of the path that has siblings: the ids of its siblings and itself, oldest first.
    versions: dict[uuid.UUID, list[uuid.UUID]] = Field(default_factory=dict)
    #: How many messages of the conversation are not on the path.
    other_messages: int = 0


class TurnIds(SQLModel):
    """What begin_turn created: the saved user message and the pending assistant placeholder."""

    conversation_id: uuid.UUID
    user_message_id: uuid.UUID | None
    user_position: int | None
    assistant_message_id: uuid.UUID
    assistant_position: int
    #: The user message's parent (begin_reply: the reply's); None for a root.
    parent_id: uuid.UUID | None = None
    #: The stored attachment of each file given to begin_turn, in the same order.
    attachment_ids: list[uuid.UUID] = Field(default_factory=list)


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
    #: Replies refused for their content (moderation, a provider's safety filter): not model errors.
    refused_rate: float = 0.0
    #: Replies cut off: the token limit reached, or the stream ended without finishing.
    truncated_rate: float = 0.0


# --- compare mode ---------------------------------------------------------------------------
#
# One prompt sent to 2-4 panes is a `comparison`. Each pane's reply is an ordinary assistant
# message in a hidden per-pane conversation (kind "compare_pane"), so metrics, usage statistics
# and search reuse the message columns, and a follow-up prompt continues each pane's history.
# `comparison_pane` ties a run's slot (the order shown, A, B, ...) to that message.


class Comparison(SQLModel, table=True):
    __tablename__ = "comparison"
    __table_args__ = (sa.Index("ix_comparison_owner_created", "owner", "created_at"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    owner: str = Field(max_length=OWNER_MAX)
    prompt: str = Field(sa_type=sa.Text)
    #: True when the names were hidden (and the panes shuffled) until the vote.
    blind: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class ComparisonPane(SQLModel, table=True):
    __tablename__ = "comparison_pane"
    __table_args__ = (sa.UniqueConstraint("comparison_id", "slot", name="uq_comparison_pane_slot"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    comparison_id: uuid.UUID = Field(foreign_key="comparison.id", ondelete="CASCADE")
    slot: int = Field(ge=0, lt=MAX_PANES)
    message_id: uuid.UUID = Field(foreign_key="message.id", ondelete="CASCADE", index=True)
    #: USD at the price table the user had when the reply finished; None when unpriced.
    cost_usd: float | None = None


class ComparisonVote(SQLModel, table=True):
    __tablename__ = "comparison_vote"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    # Unique: one vote per run.
    comparison_id: uuid.UUID = Field(foreign_key="comparison.id", ondelete="CASCADE", unique=True)
    owner: str = Field(max_length=OWNER_MAX, index=True)
    verdict: str = Field(max_length=16)
    winner_slot: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


class PaneStart(SQLModel):
    """One pane of a new run: its model, settings and (for a follow-up) its pane conversation."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]  # SQLModel types it as its own SQLModelConfig; a ConfigDict is what it reads

    provider: str = Field(min_length=1, max_length=NAME_MAX)
    model: str = Field(min_length=1, max_length=NAME_MAX)
    params: dict[str, Any] | None = None
    system_prompt: str | None = None
    conversation_id: uuid.UUID | None = None


class PaneIds(SQLModel):
    slot: int
    conversation_id: uuid.UUID
    assistant_message_id: uuid.UUID


class ComparisonIds(SQLModel):
    """What begin_comparison created."""

    comparison_id: uuid.UUID
    panes: list[PaneIds]


class ComparisonVotePublic(SQLModel):
    comparison_id: uuid.UUID
    verdict: str
    winner_slot: int | None
    created_at: datetime


class ComparisonPanePublic(SQLModel):
    slot: int
    conversation_id: uuid.UUID
    system_prompt: str | None
    cost_usd: float | None
    message: MessagePublic


class ComparisonDetail(SQLModel):
    """One run with its panes in slot order and its vote (None before the vote)."""

    id: uuid.UUID
    prompt: str
    blind: bool
    created_at: datetime
    panes: list[ComparisonPanePublic]
    vote: ComparisonVotePublic | None


class VoteRecord(SQLModel):
    """A vote as the leaderboard needs it: the models by slot ("provider:model") and the verdict."""

    comparison_id: uuid.UUID
    models: list[str]
    verdict: str
    winner_slot: int | None
    blind: bool
    #: The replies by slot, as `models` (the leaderboard's style control counts their markdown).
    texts: list[str] = Field(default_factory=list)


# --- replicas -------------------------------------------------------------------------------


class Replica(SQLModel, table=True):
    """An app process using this database, with its last heartbeat (storage.replicas writes it)."""

    __tablename__ = "replica"

    id: str = Field(primary_key=True, max_length=INSTANCE_ID_MAX)
    #: The machine and process namespace (hostname, boot id, pid namespace): a process starting with
    #: the same value can tell whether `pid` still runs, and write off a dead one without waiting.
    host: str = Field(default="", max_length=OWNER_MAX)
    pid: int = 0
    started_at: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)


# --- share links ----------------------------------------------------------------------------
#
# A read-only link to one conversation or one comparison. Only the SHA-256 of the link's token is
# stored: the token itself is shown to its owner once, at creation (storage/sharing.py).

SHARE_CONVERSATION = "conversation"
SHARE_COMPARISON = "comparison"


class ShareLink(SQLModel, table=True):
    __tablename__ = "share_link"
    __table_args__ = (
        sa.UniqueConstraint("token_hash", name="uq_share_link_token_hash"),
        sa.CheckConstraint("(conversation_id IS NULL) <> (comparison_id IS NULL)", name="ck_share_link_one_target"),
        sa.Index("ix_share_link_owner_created", "owner", "created_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    owner: str = Field(max_length=OWNER_MAX)
    token_hash: str = Field(max_length=64)
    conversation_id: uuid.UUID | None = Field(default=None, foreign_key="conversation.id", ondelete="CASCADE", index=True)
    comparison_id: uuid.UUID | None = Field(default=None, foreign_key="comparison.id", ondelete="CASCADE", index=True)
    #: A conversation's link shows every version, not only the current path.
    whole_tree: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    created_at: datetime = Field(default_factory=utcnow)


class ShareLinkPublic(SQLModel):
    """One of an owner's links as their list shows it (never the token: it is not stored)."""

    id: uuid.UUID
    kind: str  # SHARE_CONVERSATION or SHARE_COMPARISON
    target_id: uuid.UUID
    #: The conversation's title, or the comparison's prompt (cut short).
    title: str
    created_at: datetime
    #: A conversation's link that shows every version, not only the current path.
    whole_tree: bool = False


class NewShareLink(SQLModel):
    """A link just made: the only time its token exists outside the visitor's address bar."""

    link: ShareLinkPublic
    token: str = Field(repr=False)


class SharedMessage(SQLModel):
    """A message as a shared page shows it: what was said, by which model, with which files."""

    role: str
    content: str
    #: "provider:model" of a reply; None for the user's messages (and for hidden blind panes).
    model: str | None = None
    error: str | None = None
    finish_reason: str | None = None
    attachments: list[AttachmentRef] = Field(default_factory=list)
    #: In a whole-tree view: the index in `SharedView.messages` of the message this one follows.
    parent: int | None = None


class SharedPane(SQLModel):
    """One pane of a shared comparison; `reply.model` is None while a blind run has no vote."""

    slot: int
    reply: SharedMessage
    winner: bool = False


class SharedView(SQLModel):
    """Everything a shared page may show, and nothing else of the owner's."""

    kind: str
    title: str
    created_at: datetime
    #: A conversation's user and assistant messages: its current path in order, or with `whole_tree`
    #: every version of them by creation order, each with its `parent` (empty for a comparison).
    messages: list[SharedMessage] = Field(default_factory=list)
    whole_tree: bool = False
    #: With `whole_tree`: the indexes in `messages` of the current path, in order.
    path: list[int] = Field(default_factory=list)
    #: A comparison's prompt with its files, and its panes in the order shown.
    prompt: SharedMessage | None = None
    panes: list[SharedPane] = Field(default_factory=list)
    blind: bool = False
    #: False for a blind comparison without its vote: the page names no model.
    revealed: bool = True
    verdict: str | None = None

    def attachment_ids(self) -> set[uuid.UUID]:
        """The files this page shows: the only ones its file route serves."""
        messages = [*self.messages, *([self.prompt] if self.prompt else [])]
        return {ref.id for m in messages for ref in m.attachments}
