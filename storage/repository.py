"""Every read and write of conversations and messages, one keyword-only function each.

Each function takes the caller's `session` and the `owner` whose rows it may touch, and filters
by that owner: another owner's id behaves exactly like an unknown one (NotFound). Functions that
write commit before returning, so one call is one transaction; none opens a session of its own.
Database failures come out as the StorageError hierarchy (storage/errors.py), never as raw
SQLAlchemy exceptions, and a failed call leaves the session rolled back and usable.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, ParamSpec, TypeVar

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session, col, select
from sqlmodel.sql.sqltypes import UTCDateTime

from storage import blind, transfer
from storage import search as fts
from storage.errors import POOL_EXHAUSTED, Conflict, InvalidInput, NotFound, StorageError, StorageUnavailable, unavailable_message
from storage.models import (
    CONVERSATION_KINDS,
    DEFAULT_TITLE,
    FINISH_REASONS,
    INTERRUPTED,
    KIND_CHAT,
    KIND_COMPARE_PANE,
    MAX_PANES,
    MIN_PANES,
    PENDING,
    VERDICTS,
    Comparison,
    ComparisonDetail,
    ComparisonIds,
    ComparisonPane,
    ComparisonPanePublic,
    ComparisonVote,
    ComparisonVotePublic,
    Conversation,
    ConversationCreate,
    ConversationDetail,
    ConversationPublic,
    Message,
    MessagePublic,
    ModelStats,
    PaneIds,
    PaneStart,
    Replica,
    SearchHit,
    ToolCallRecord,
    TurnIds,
    VoteRecord,
    utcnow,
)
from storage.replicas import GRACE_S, INSTANCE_KEY
from storage.validation import (
    auto_title,
    check_metric,
    check_name,
    check_owner,
    check_params,
    clean_text,
    clean_title,
    parse_id,
)

__all__ = [
    "begin_comparison",
    "begin_reply",
    "begin_turn",
    "comparison_votes",
    "export_comparisons",
    "get_comparison",
    "set_comparison_costs",
    "vote_comparison",
    "create_conversation",
    "delete_conversation",
    "export_json",
    "export_markdown",
    "finish_turn",
    "get_conversation",
    "import_json",
    "list_conversations",
    "mark_interrupted",
    "rename_conversation",
    "search_messages",
    "set_archived",
    "set_feedback",
    "set_pinned",
    "truncate_after",
    "usage_stats",
]

MAX_PAGE = 500
MAX_SEARCH_HITS = 200

P = ParamSpec("P")
R = TypeVar("R")


def _guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Roll back on any failure and turn database exceptions into StorageErrors."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        session = kwargs.get("session")
        try:
            return fn(*args, **kwargs)
        except StorageError:
            _rollback(session)
            raise
        except ValidationError as e:
            _rollback(session)
            raise InvalidInput(str(e).splitlines()[0]) from e
        except IntegrityError as e:
            _rollback(session)
            raise Conflict("The conversation changed while this was being saved; try again.") from e
        except (OperationalError, InterfaceError) as e:
            _rollback(session)  # lock_timeout and statement_timeout end up here too
            raise StorageUnavailable(unavailable_message(e)) from e
        except PoolTimeout as e:
            _rollback(session)
            raise StorageUnavailable(POOL_EXHAUSTED) from e
        except DataError as e:
            _rollback(session)
            raise InvalidInput(f"The database refused a value: {_first_line(e)}") from e

    return wrapper


def _first_line(error: Exception) -> str:
    lines = str(getattr(error, "orig", None) or error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


def _rollback(session: object) -> None:
    if isinstance(session, Session):
        try:
            session.rollback()
        except Exception:  # noqa: BLE001 - the original error is the one worth reporting
            pass


def _owned_conversation(session: Session, owner: str, conversation_id: object) -> Conversation:
    cid = parse_id(conversation_id, "conversation")
    row = session.exec(select(Conversation).where(Conversation.id == cid, Conversation.owner == owner)).first()
    if row is None:
        raise NotFound(f"No conversation with id {str(cid)!r}.")
    # Only a pane can belong to a comparison, so chats (the hot path) skip the secrecy query.
    if row.kind != KIND_CHAT and session.execute(sa.select(blind.secret_conversation(row.id))).scalar_one():
        raise NotFound(blind.HIDDEN_MESSAGE)
    return row


def _owned_message(session: Session, owner: str, message_id: object) -> Message:
    mid = parse_id(message_id, "message")
    row = session.exec(select(Message).where(Message.id == mid, Message.owner == owner)).first()
    if row is None:
        raise NotFound(f"No message with id {str(mid)!r}.")
    return row


def _conversation_public(row: Conversation) -> ConversationPublic:
    return ConversationPublic.model_validate(row)


def _message_public(row: Message) -> MessagePublic:
    return MessagePublic.model_validate(row)


def _aware(moment: datetime | None, what: str) -> datetime | None:
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        raise InvalidInput(f"The {what} must be a date and time.")
    return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment.astimezone(UTC)


# --- conversations --------------------------------------------------------------------------


@_guarded
def create_conversation(
    *,
    session: Session,
    owner: str,
    title: str | None = None,
    first_prompt: str | None = None,
    model: str | None = None,
    system_prompt: str | None = None,
    params: dict[str, Any] | None = None,
) -> ConversationPublic:
    """A new empty conversation; its title is `title`, else cut from `first_prompt`, else "New chat"."""
    owner = check_owner(owner)
    data = ConversationCreate(
        title=clean_title(title) if title is not None else auto_title(first_prompt),
        model=check_name(model, "model"),
        system_prompt=clean_text(system_prompt, "system prompt", optional=True),
        params=check_params(params),
    )
    row = Conversation.model_validate(data, update={"owner": owner})
    session.add(row)
    public = _conversation_public(row)
    session.commit()
    return public


@_guarded
def list_conversations(
    *,
    session: Session,
    owner: str,
    limit: int = 50,
    offset: int = 0,
    archived: bool | None = False,
    kind: str | None = KIND_CHAT,
) -> list[ConversationPublic]:
    """A page of conversations, pinned first then most recently active; `archived=None` lists all.

    Only chats by default: compare mode's hidden pane conversations need `kind="compare_pane"`
    (or `kind=None` for every kind), and even then the panes of a blind comparison without its
    vote are left out.
    """
    owner = check_owner(owner)
    if kind is not None and kind not in CONVERSATION_KINDS:
        raise InvalidInput(f"Unknown conversation kind {str(kind)[:40]!r}.")
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"The page size must be between 1 and {MAX_PAGE}.")
    if not isinstance(offset, int) or offset < 0:
        raise InvalidInput("The page offset cannot be negative.")
    query = select(Conversation).where(Conversation.owner == owner)
    if kind is not None:
        query = query.where(Conversation.kind == kind)
    if kind != KIND_CHAT:
        query = query.where(~blind.secret_conversation(col(Conversation.id)))
    if archived is not None:
        query = query.where(Conversation.archived == archived)
    query = query.order_by(
        col(Conversation.pinned).desc(), col(Conversation.updated_at).desc(), col(Conversation.id).desc()
    )
    rows = session.exec(query.offset(offset).limit(limit)).all()
    return [_conversation_public(r) for r in rows]


@_guarded
def get_conversation(*, session: Session, owner: str, conversation_id: uuid.UUID | str) -> ConversationDetail:
    """One conversation with its messages in order (NotFound for a pane of an unvoted blind comparison)."""
    owner = check_owner(owner)
    conversation = _owned_conversation(session, owner, conversation_id)
    return ConversationDetail(
        conversation=_conversation_public(conversation),
        messages=_messages_of(session, owner, [conversation.id])[conversation.id],
    )


def _messages_of(session: Session, owner: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, list[MessagePublic]]:
    found: dict[uuid.UUID, list[MessagePublic]] = {cid: [] for cid in ids}
    if not ids:
        return found
    table = Message.__table__
    columns = [table.c[name] for name in MessagePublic.model_fields]
    query = sa.select(*columns).where(table.c.owner == owner)
    query = query.where(table.c.conversation_id == ids[0]) if len(ids) == 1 else query
    query = query.order_by(table.c.conversation_id, table.c.position)
    # Rows straight from Core into the public model: this is the hot path of opening a long chat.
    for row in session.execute(query).mappings():
        if row["conversation_id"] in found:
            found[row["conversation_id"]].append(MessagePublic.model_construct(**row))
    return found


@_guarded
def rename_conversation(
    *, session: Session, owner: str, conversation_id: uuid.UUID | str, title: str
) -> ConversationPublic:
    """Give a conversation a new title (one line, 1 to 200 characters)."""
    owner = check_owner(owner)
    title = clean_title(title)
    row = _owned_conversation(session, owner, conversation_id)
    row.title = title
    public = _conversation_public(row)
    session.commit()
    return public


@_guarded
def set_pinned(*, session: Session, owner: str, conversation_id: uuid.UUID | str, pinned: bool) -> ConversationPublic:
    """Pin (listed first) or unpin a conversation."""
    return _set_flag(session, owner, conversation_id, "pinned", pinned)


@_guarded
def set_archived(
    *, session: Session, owner: str, conversation_id: uuid.UUID | str, archived: bool
) -> ConversationPublic:
    """Archive (hidden from the default list) or restore a conversation."""
    return _set_flag(session, owner, conversation_id, "archived", archived)


def _set_flag(session: Session, owner: str, conversation_id: object, name: str, value: object) -> ConversationPublic:
    owner = check_owner(owner)
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false.")
    row = _owned_conversation(session, owner, conversation_id)
    setattr(row, name, value)
    public = _conversation_public(row)
    session.commit()
    return public


@_guarded
def delete_conversation(*, session: Session, owner: str, conversation_id: uuid.UUID | str) -> None:
    """Delete a conversation and (by cascade) its messages."""
    owner = check_owner(owner)
    cid = parse_id(conversation_id, "conversation")
    # Core delete so the database's ON DELETE CASCADE removes the messages (and their index rows).
    result = session.execute(
        sa.delete(Conversation.__table__).where(
            Conversation.__table__.c.id == cid, Conversation.__table__.c.owner == owner
        )
    )
    if result.rowcount == 0:
        raise NotFound(f"No conversation with id {str(cid)!r}.")
    session.commit()
    session.expire_all()


# --- turns ----------------------------------------------------------------------------------


@_guarded
def begin_turn(
    *,
    session: Session,
    owner: str,
    conversation_id: uuid.UUID | str,
    content: str,
    provider: str | None = None,
    model: str | None = None,
    params: dict[str, Any] | None = None,
    system_prompt: str | None = None,
) -> TurnIds:
    """Save the user's message and a pending assistant placeholder in one transaction.

    Call it before the provider is called; call finish_turn with the reply when it ends. The
    conversation remembers `provider:model`, `params` and `system_prompt` as last used, and takes
    its title from `content` when it is still the default and this is the first message.
    """
    content = clean_text(content, "message")
    return _begin(session, owner, conversation_id, content, provider, model, params, system_prompt)


@_guarded
def begin_reply(
    *,
    session: Session,
    owner: str,
    conversation_id: uuid.UUID | str,
    provider: str | None = None,
    model: str | None = None,
    params: dict[str, Any] | None = None,
    system_prompt: str | None = None,
) -> TurnIds:
    """Add only a pending assistant placeholder (Retry: after truncate_after removed the old reply)."""
    return _begin(session, owner, conversation_id, None, provider, model, params, system_prompt)


def _begin(
    session: Session,
    owner: str,
    conversation_id: object,
    content: str | None,
    provider: object,
    model: object,
    params: object,
    system_prompt: object,
    *,
    commit: bool = True,
) -> TurnIds:
    owner = check_owner(owner)
    cid = parse_id(conversation_id, "conversation")
    provider = check_name(provider, "provider")
    model = check_name(model, "model")
    params = check_params(params)
    system_prompt = clean_text(system_prompt, "system prompt", optional=True)
    now = utcnow()
    values: dict[str, Any] = {"updated_at": now}
    if provider or model:
        values["model"] = check_name(f"{provider}:{model}" if provider and model else provider or model, "model")
    if params is not None:
        values["params"] = params
    if system_prompt is not None:
        values["system_prompt"] = system_prompt
    table = Conversation.__table__
    # Writing the conversation first takes its lock (the row on PostgreSQL, the database write lock
    # on SQLite) before the next position is read, so two turns can never claim the same position.
    updated = session.execute(
        sa.update(table).where(table.c.id == cid, table.c.owner == owner).values(**values)
    )
    if updated.rowcount == 0:
        raise NotFound(f"No conversation with id {str(cid)!r}.")
    last = session.execute(
        sa.select(sa.func.max(Message.__table__.c.position)).where(Message.__table__.c.conversation_id == cid)
    ).scalar_one()
    position = 0 if last is None else last + 1
    if content is not None and position == 0:
        session.execute(
            sa.update(table)
            .where(table.c.id == cid, table.c.title == DEFAULT_TITLE)
            .values(title=auto_title(content))
        )
    blank = dict(conversation_id=cid, owner=owner, content="", provider=None, model=None, params=None,
                 finish_reason=None, created_at=now, instance_id=None)  # fmt: skip
    rows = []
    user_id = user_position = None
    if content is not None:
        user_id, user_position = uuid.uuid4(), position
        rows.append({**blank, "id": user_id, "position": position, "role": "user", "content": content})
        position += 1
    assistant_id = uuid.uuid4()
    rows.append(
        {**blank, "id": assistant_id, "position": position, "role": "assistant", "provider": provider,
         "model": model, "params": params, "finish_reason": PENDING,
         "instance_id": session.info.get(INSTANCE_KEY)}  # which process streams it: see storage.replicas
    )  # fmt: skip
    # One statement for both rows: a round trip less on the path every prompt takes.
    session.execute(sa.insert(Message.__table__), rows)
    if commit:  # begin_comparison commits all its panes' turns at once
        session.commit()
        session.expire_all()
    return TurnIds(
        conversation_id=cid,
        user_message_id=user_id,
        user_position=user_position,
        assistant_message_id=assistant_id,
        assistant_position=position,
    )


@_guarded
def finish_turn(
    *,
    session: Session,
    owner: str,
    message_id: uuid.UUID | str,
    content: str,
    finish_reason: str,
    reasoning: str | None = None,
    provider: str | None = None,
    model: str | None = None,
    model_version: str | None = None,
    params: dict[str, Any] | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    reasoning_tokens: int | None = None,
    ttft_ms: int | float | None = None,
    duration_ms: int | float | None = None,
    error: str | None = None,
    tool_calls: list[ToolCallRecord | dict[str, Any]] | None = None,
    cached_input_tokens: int | None = None,
    cache_write_tokens: int | None = None,
    usage_estimated: bool | None = None,
) -> MessagePublic:
    """Write the reply (whole or partial) and its metrics into the pending placeholder.

    `finish_reason` is one of FINISH_REASONS ("stop", "cancelled", "error", ...; a FinishReason
    enum works too). Only a pending (or interrupted) assistant message can be finished.
    Usage follows chat's contract: input_tokens is the whole prompt, cached_input_tokens and
    cache_write_tokens parts of it, output_tokens includes reasoning_tokens, and usage_estimated
    says whether the figures are an estimate (True) or the provider's (False).
    """
    owner = check_owner(owner)
    reason = getattr(finish_reason, "value", finish_reason)
    if reason not in FINISH_REASONS:
        raise InvalidInput(f"Unknown finish reason {str(reason)[:40]!r}.")
    values: dict[str, Any] = dict(
        content=clean_text(content, "reply"),
        reasoning=clean_text(reasoning, "reasoning", optional=True),
        model_version=check_name(model_version, "model version"),
        input_tokens=check_metric(input_tokens, "input token count"),
        output_tokens=check_metric(output_tokens, "output token count"),
        reasoning_tokens=check_metric(reasoning_tokens, "reasoning token count"),
        cached_input_tokens=check_metric(cached_input_tokens, "cached input token count"),
        cache_write_tokens=check_metric(cache_write_tokens, "cache write token count"),
        usage_estimated=_flag(usage_estimated, "usage_estimated"),
        ttft_ms=check_metric(ttft_ms, "time to first token"),
        duration_ms=check_metric(duration_ms, "duration"),
        finish_reason=reason,
        error=clean_text(error, "error", limit=100_000, optional=True),
        tool_calls=_tool_calls(tool_calls),
    )
    _check_cache_parts(values)
    # Only overwrite what the placeholder already knows when the caller says something new.
    for name, value in (("provider", provider), ("model", model)):
        if value is not None:
            values[name] = check_name(value, name)
    if params is not None:
        values["params"] = check_params(params)
    row = _owned_message(session, owner, message_id)
    if row.role != "assistant":
        raise InvalidInput("Only an assistant reply can be finished.")
    if row.finish_reason not in (PENDING, INTERRUPTED):
        raise InvalidInput("This reply is already finished.")
    for name, value in values.items():
        setattr(row, name, value)
    session.execute(
        sa.update(Conversation.__table__)
        .where(Conversation.__table__.c.id == row.conversation_id)
        .values(updated_at=utcnow())
    )
    session.flush()
    public = _message_public(row)
    session.commit()
    return public


def _check_cache_parts(values: dict[str, Any]) -> None:
    # Cached reads and cache writes are parts of the prompt: more of them than the prompt is a bad figure.
    total, parts = values["input_tokens"], (values["cached_input_tokens"] or 0) + (values["cache_write_tokens"] or 0)
    if total is not None and parts > total:
        raise InvalidInput(f"Cached and cache-write tokens ({parts}) cannot exceed the input tokens ({total}).")


def _flag(value: object, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidInput(f"{what} must be true, false or null.")


def _tool_calls(calls: object) -> list[dict[str, Any]] | None:
    if calls is None:
        return None
    if not isinstance(calls, list | tuple):
        raise InvalidInput("Tool calls must be a list.")
    return [ToolCallRecord.model_validate(c).model_dump() for c in calls]


@_guarded
def save_partial(
    *, session: Session, owner: str, message_id: uuid.UUID | str, content: str, reasoning: str | None = None
) -> bool:
    """Keep the text of a reply still streaming, so a server that dies mid-reply loses little of it.

    Writes only while the reply is pending: a late call never overwrites a finished reply.
    Returns whether it wrote.
    """
    owner = check_owner(owner)
    mid = parse_id(message_id, "message")
    content = clean_text(content, "reply", optional=True) or ""
    reasoning = clean_text(reasoning, "reasoning", optional=True)
    table = Message.__table__
    result = session.execute(
        sa.update(table)
        .where(table.c.id == mid, table.c.owner == owner, table.c.finish_reason == PENDING)
        .values(content=content, reasoning=reasoning)
    )
    session.commit()
    return result.rowcount == 1


@_guarded
def mark_interrupted(
    *,
    session: Session,
    grace: timedelta = timedelta(seconds=GRACE_S),
    instance_id: str | None = None,
    before: datetime | None = None,
) -> int:
    """Turn replies left "pending" by app processes that are gone into "interrupted".

    A reply counts as orphaned when it is older than `grace` and the process that streams it
    (message.instance_id) has not sent a heartbeat within `grace`; a reply with no process recorded
    goes by age alone. So a starting replica never marks another one's live replies, whose partial
    saves would then stop. `grace=timedelta(0)` marks every pending reply (nothing else is running).
    `instance_id` marks that process's replies whatever their age (its own clean shutdown), and
    `before` keeps replies created at or after that time. Deliberately not per owner: it repairs the
    whole database. Returns how many replies were marked.
    """
    if not isinstance(grace, timedelta) or grace < timedelta(0):
        raise InvalidInput("The grace period must be a duration from zero.")
    table = Message.__table__
    query = sa.update(table).where(table.c.finish_reason == PENDING)
    if instance_id is not None:
        query = query.where(table.c.instance_id == check_name(instance_id, "instance id"))
    else:
        cutoff = utcnow() - grace
        replicas = Replica.__table__
        alive = sa.exists().where(replicas.c.id == table.c.instance_id, replicas.c.last_seen >= cutoff)
        query = query.where(table.c.created_at < cutoff, ~alive)
    before = _aware(before, "cut-off time")
    if before is not None:
        query = query.where(table.c.created_at < before)
    result = session.execute(query.values(finish_reason=INTERRUPTED))
    session.commit()
    return result.rowcount


@_guarded
def truncate_after(*, session: Session, owner: str, conversation_id: uuid.UUID | str, position: int) -> int:
    """Delete the messages at `position` and after it (Retry, Undo, Edit); returns how many went."""
    owner = check_owner(owner)
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise InvalidInput("The position must be a whole number from 0.")
    conversation = _owned_conversation(session, owner, conversation_id)
    table = Message.__table__
    result = session.execute(
        sa.delete(table).where(
            table.c.conversation_id == conversation.id, table.c.owner == owner, table.c.position >= position
        )
    )
    conversation.updated_at = utcnow()
    session.commit()
    return result.rowcount


@_guarded
def set_feedback(
    *, session: Session, owner: str, message_id: uuid.UUID | str, feedback: Literal["like", "dislike"] | None
) -> MessagePublic:
    """Record a like or dislike on an assistant reply (None clears it)."""
    owner = check_owner(owner)
    if feedback not in ("like", "dislike", None):
        raise InvalidInput("Feedback must be 'like', 'dislike' or nothing.")
    row = _owned_message(session, owner, message_id)
    if row.role != "assistant":
        raise InvalidInput("Only an assistant reply can be liked or disliked.")
    row.feedback = feedback
    session.flush()
    public = _message_public(row)
    session.commit()
    return public


# --- search and statistics ------------------------------------------------------------------

_HIT_COLUMNS = dict(
    id=sa.Uuid(),
    conversation_id=sa.Uuid(),
    title=sa.String(),
    role=sa.String(),
    content=sa.Text(),
    reasoning=sa.Text(),
    created_at=UTCDateTime(),
)

_SQLITE_SEARCH = sa.text(
    """
    SELECT m.id, m.conversation_id, c.title, m.role, m.content, m.reasoning, m.created_at
    FROM message_fts
    JOIN message AS m ON m.rowid = message_fts.rowid
    JOIN conversation AS c ON c.id = m.conversation_id
    WHERE message_fts MATCH :query AND m.owner = :owner AND c.owner = :owner AND c.kind = 'chat'
    ORDER BY m.created_at DESC, m.position DESC
    LIMIT :limit
    """
).columns(**_HIT_COLUMNS)

_PG_SEARCH = sa.text(
    """
    SELECT m.id, m.conversation_id, c.title, m.role, m.content, m.reasoning, m.created_at
    FROM message AS m
    JOIN conversation AS c ON c.id = m.conversation_id
    WHERE m.search @@ plainto_tsquery('simple', :query) AND m.owner = :owner AND c.owner = :owner AND c.kind = 'chat'
    ORDER BY m.created_at DESC, m.position DESC
    LIMIT :limit
    """
).columns(**_HIT_COLUMNS)


@_guarded
def search_messages(*, session: Session, owner: str, query: str, limit: int = 50) -> list[SearchHit]:
    """This owner's chat messages containing every word of `query`, newest first, with a marked snippet.

    Compare panes are left out: opening one from the sidebar would reveal a blind pane's model.

    Whatever `query` holds (quotes, operators, SQL) is searched for as words. A query without any
    letter or digit finds nothing.
    """
    owner = check_owner(owner)
    if not isinstance(query, str):
        raise InvalidInput("The search must be text.")
    if not isinstance(limit, int) or not 1 <= limit <= MAX_SEARCH_HITS:
        raise InvalidInput(f"The number of results must be between 1 and {MAX_SEARCH_HITS}.")
    terms = fts.search_terms(query)
    if not terms:
        return []
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        statement, text = _SQLITE_SEARCH, fts.fts5_query(terms, owner)
    elif dialect == "postgresql":
        statement, text = _PG_SEARCH, fts.pg_query_text(terms)
    else:  # pragma: no cover - only the two supported backends have a migration with an index
        raise StorageError(f"Search is not available on {dialect}.")
    words = fts.highlight_words(terms)
    rows = session.execute(statement, {"query": text, "owner": owner, "limit": limit}).mappings()
    return [
        SearchHit(
            conversation_id=r["conversation_id"],
            title=r["title"],
            message_id=r["id"],
            role=r["role"],
            snippet=fts.make_snippet(r["content"], r["reasoning"], words),
            created_at=r["created_at"],
        )
        for r in rows
    ]


@_guarded
def usage_stats(
    *,
    session: Session,
    owner: str | None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[ModelStats]:
    """Per provider+model usage of finished replies in [since, until); `owner=None` means everyone.

    Error rate is replies that ended in "error" over all finished replies. Tokens per second is
    chat.types.tokens_per_second's definition, token-weighted over replies: output tokens (reasoning
    included) over generation time (duration minus time to first token), summed over the replies
    that have both and at least MIN_RATE_TOKENS output tokens. Percentiles interpolate linearly
    (PostgreSQL's percentile_cont). The pane replies of a blind comparison count once it has its
    vote: before, their figures would tell which model wrote which pane.
    """
    if owner is not None:
        owner = check_owner(owner)
    since, until = _aware(since, "start"), _aware(until, "end")
    m = Message.__table__.c
    model = sa.func.coalesce(m.model, "")
    generating = sa.and_(m.output_tokens >= MIN_RATE_TOKENS, m.ttft_ms.is_not(None), m.duration_ms > m.ttft_ms)
    conditions = [m.role == "assistant", m.provider.is_not(None), m.finish_reason.is_not(None), m.finish_reason != PENDING,
                  ~blind.secret_reply(m.id)]
    if owner is not None:
        conditions.append(m.owner == owner)
    if since is not None:
        conditions.append(m.created_at >= since)
    if until is not None:
        conditions.append(m.created_at < until)
    columns = [
        m.provider,
        model.label("model"),
        sa.func.count().label("count"),
        sa.func.coalesce(sa.func.sum(m.input_tokens), 0).label("input_tokens"),
        sa.func.coalesce(sa.func.sum(m.output_tokens), 0).label("output_tokens"),
        sa.func.sum(sa.case((m.finish_reason == "error", 1), else_=0)).label("errors"),
        sa.func.sum(sa.case((generating, m.output_tokens), else_=0)).label("gen_tokens"),
        sa.func.sum(sa.case((generating, m.duration_ms - m.ttft_ms), else_=0)).label("gen_ms"),
    ]
    is_pg = session.get_bind().dialect.name == "postgresql"
    if is_pg:
        columns += [
            sa.func.percentile_cont(0.5).within_group(m.ttft_ms).label("p50"),
            sa.func.percentile_cont(0.95).within_group(m.ttft_ms).label("p95"),
        ]
    query = sa.select(*columns).where(*conditions).group_by(m.provider, model).order_by(m.provider, model)
    rows = session.execute(query).mappings().all()
    percentiles: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    if not is_pg:
        # SQLite has no percentile function: read the (already filtered) times in order instead.
        ttfts: dict[tuple[str, str], list[int]] = {}
        times = sa.select(m.provider, model, m.ttft_ms).where(*conditions, m.ttft_ms.is_not(None)).order_by(m.ttft_ms)
        for provider, model_name, ttft in session.execute(times):
            ttfts.setdefault((provider, model_name), []).append(ttft)
        percentiles = {k: (_percentile(v, 0.5), _percentile(v, 0.95)) for k, v in ttfts.items()}
    stats = []
    for r in rows:
        p50, p95 = (r["p50"], r["p95"]) if is_pg else percentiles.get((r["provider"], r["model"]), (None, None))
        stats.append(
            ModelStats(
                provider=r["provider"],
                model=r["model"],
                count=r["count"],
                input_tokens=int(r["input_tokens"]),
                output_tokens=int(r["output_tokens"]),
                ttft_p50_ms=None if p50 is None else float(p50),
                ttft_p95_ms=None if p95 is None else float(p95),
                error_rate=(r["errors"] or 0) / r["count"],
                tokens_per_second=(r["gen_tokens"] * 1000 / r["gen_ms"]) if r["gen_ms"] else None,
            )
        )
    return stats


#: chat.types.MIN_RATE_TOKENS (storage does not import chat; a test keeps the two equal).
MIN_RATE_TOKENS = 10


def _percentile(ordered: list[int], fraction: float) -> float | None:
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- export and import ----------------------------------------------------------------------

PANE_NOT_EXPORTED = "This conversation is a pane of a comparison, not a chat: export comparisons from the Compare tab."


def _details(session: Session, owner: str, conversation_id: object) -> list[ConversationDetail]:
    # Chats only: comparisons have their own export (export_comparisons), and a pane in this file
    # would come back from import_json as an ordinary chat, its blind model named.
    if conversation_id is not None:
        conversation = _owned_conversation(session, owner, conversation_id)
        if conversation.kind != KIND_CHAT:
            raise InvalidInput(PANE_NOT_EXPORTED)
        conversations = [conversation]
    else:
        query = select(Conversation).where(Conversation.owner == owner, Conversation.kind == KIND_CHAT)
        conversations = list(session.exec(query.order_by(col(Conversation.created_at), col(Conversation.id))).all())
    messages = _messages_of(session, owner, [c.id for c in conversations])
    return [ConversationDetail(conversation=_conversation_public(c), messages=messages[c.id]) for c in conversations]


@_guarded
def export_json(*, session: Session, owner: str, conversation_id: uuid.UUID | str | None = None) -> str:
    """One chat (or, with no id, all of this owner's chats) as Parley JSON, which import_json reads."""
    owner = check_owner(owner)
    return transfer.to_json(transfer.build_export(_details(session, owner, conversation_id)))


@_guarded
def export_markdown(*, session: Session, owner: str, conversation_id: uuid.UUID | str | None = None) -> str:
    """One chat (or all of this owner's chats) as Markdown in which any HTML stays plain text."""
    owner = check_owner(owner)
    return transfer.to_markdown(_details(session, owner, conversation_id))


@_guarded
def import_json(*, session: Session, owner: str, data: str | bytes) -> list[uuid.UUID]:
    """Add the conversations of a Parley JSON export to `owner`, with new ids; all or nothing.

    The file is validated completely before anything is written; a bad file raises InvalidInput.
    Replies that were still pending when exported come in as "interrupted".
    """
    owner = check_owner(owner)
    document = transfer.parse_import(data)
    now = utcnow()
    created: list[uuid.UUID] = []
    conversation_rows: list[dict[str, Any]] = []
    message_rows: list[dict[str, Any]] = []
    for item in document.conversations:
        cid = uuid.uuid4()
        created.append(cid)
        created_at = _aware(item.created_at, "creation time") or now
        conversation_rows.append(
            dict(id=cid, owner=owner, title=clean_title(item.title), model=item.model,
                 system_prompt=clean_text(item.system_prompt, "system prompt", optional=True),
                 params=item.params, pinned=item.pinned, archived=item.archived,
                 created_at=created_at, updated_at=_aware(item.updated_at, "update time") or created_at)
        )  # fmt: skip
        for position, msg in enumerate(item.messages):
            values = msg.model_dump(exclude={"id", "tool_calls", "created_at", "usage"})
            values.update(**msg.usage_columns())
            values.update(
                id=uuid.uuid4(), conversation_id=cid, owner=owner, position=position,
                content=clean_text(msg.content, "message"),
                reasoning=clean_text(msg.reasoning, "reasoning", optional=True),
                error=clean_text(msg.error, "error", optional=True),
                finish_reason=INTERRUPTED if msg.finish_reason == PENDING else msg.finish_reason,
                tool_calls=None if msg.tool_calls is None else [t.model_dump() for t in msg.tool_calls],
                created_at=_aware(msg.created_at, "message time") or created_at,
            )  # fmt: skip
            message_rows.append(values)
    if conversation_rows:
        session.execute(sa.insert(Conversation.__table__), conversation_rows)
    if message_rows:
        session.execute(sa.insert(Message.__table__), message_rows)
    session.commit()
    return created


# --- compare mode ---------------------------------------------------------------------------

MAX_COMPARISON_EXPORT = 100_000


@_guarded
def begin_comparison(
    *,
    session: Session,
    owner: str,
    prompt: str,
    panes: list[PaneStart | dict[str, Any]],
    blind: bool = False,
) -> ComparisonIds:
    """Start one compare run: per pane, the user message and a pending reply, plus the run's rows.

    `panes` are in slot order (the order shown). A pane without `conversation_id` gets a new hidden
    pane conversation (kind "compare_pane", titled from the prompt); one with an id continues that
    pane conversation (a follow-up), which must be this owner's pane conversation. All of it is one
    transaction. Finish each reply with finish_turn, as a chat reply.
    """
    owner = check_owner(owner)
    prompt = clean_text(prompt, "prompt")
    if not prompt.strip():
        raise InvalidInput("The prompt is empty.")
    if not isinstance(blind, bool):
        raise InvalidInput("blind must be true or false.")
    if not isinstance(panes, list | tuple) or not MIN_PANES <= len(panes) <= MAX_PANES:
        raise InvalidInput(f"A comparison needs {MIN_PANES} to {MAX_PANES} panes.")
    starts = [PaneStart.model_validate(p) for p in panes]
    continued = [p.conversation_id for p in starts if p.conversation_id is not None]
    if len(set(continued)) != len(continued):
        raise InvalidInput("Two panes cannot continue the same conversation.")
    if continued:
        found = set(session.exec(
            select(Conversation.id).where(
                col(Conversation.id).in_(continued), Conversation.owner == owner, Conversation.kind == KIND_COMPARE_PANE
            )
        ).all())  # fmt: skip
        for cid in continued:
            if cid not in found:
                raise NotFound(f"No compare pane conversation with id {str(cid)!r}.")
    now = utcnow()
    comparison_id = uuid.uuid4()
    pane_ids: list[PaneIds] = []
    for slot, pane in enumerate(starts):
        system_prompt = clean_text(pane.system_prompt, "system prompt", optional=True) or None
        cid = pane.conversation_id
        if cid is None:
            cid = uuid.uuid4()
            session.execute(
                sa.insert(Conversation.__table__).values(
                    id=cid, owner=owner, kind=KIND_COMPARE_PANE, title=auto_title(prompt),
                    model=check_name(f"{pane.provider}:{pane.model}", "model"),
                    system_prompt=system_prompt, params=check_params(pane.params),
                    pinned=False, archived=False, created_at=now, updated_at=now,
                )
            )  # fmt: skip
        ids = _begin(session, owner, cid, prompt, pane.provider, pane.model, pane.params, system_prompt, commit=False)
        pane_ids.append(PaneIds(slot=slot, conversation_id=cid, assistant_message_id=ids.assistant_message_id))
    session.execute(
        sa.insert(Comparison.__table__).values(id=comparison_id, owner=owner, prompt=prompt, blind=blind, created_at=now)
    )
    session.execute(
        sa.insert(ComparisonPane.__table__),
        [dict(id=uuid.uuid4(), comparison_id=comparison_id, slot=p.slot, message_id=p.assistant_message_id, cost_usd=None)
         for p in pane_ids],
    )  # fmt: skip
    session.commit()
    session.expire_all()
    return ComparisonIds(comparison_id=comparison_id, panes=pane_ids)


def _owned_comparison(session: Session, owner: str, comparison_id: object) -> Comparison:
    cid = parse_id(comparison_id, "comparison")
    row = session.exec(select(Comparison).where(Comparison.id == cid, Comparison.owner == owner)).first()
    if row is None:
        raise NotFound(f"No comparison with id {str(cid)!r}.")
    return row


@_guarded
def set_comparison_costs(
    *, session: Session, owner: str, comparison_id: uuid.UUID | str, costs: dict[int, float | None]
) -> None:
    """Record each pane's cost in USD (by slot; None when the model has no known price)."""
    owner = check_owner(owner)
    comparison = _owned_comparison(session, owner, comparison_id)
    if not isinstance(costs, dict):
        raise InvalidInput("Costs must be a mapping of slot to USD.")
    table = ComparisonPane.__table__
    for slot, value in costs.items():
        if isinstance(slot, bool) or not isinstance(slot, int):
            raise InvalidInput("A pane slot must be a whole number.")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise InvalidInput("A cost must be a non-negative number of USD.")
            value = float(value)
        result = session.execute(
            sa.update(table).where(table.c.comparison_id == comparison.id, table.c.slot == slot).values(cost_usd=value)
        )
        if result.rowcount == 0:
            raise NotFound(f"This comparison has no pane {slot}.")
    session.commit()


@_guarded
def vote_comparison(
    *,
    session: Session,
    owner: str,
    comparison_id: uuid.UUID | str,
    verdict: str,
    winner_slot: int | None = None,
) -> ComparisonVotePublic:
    """Record the one vote of a run: verdict "slot" (with the winning slot), "tie" or "both_bad"."""
    owner = check_owner(owner)
    if verdict not in VERDICTS:
        raise InvalidInput(f"Unknown verdict {str(verdict)[:40]!r}; expected slot, tie or both_bad.")
    comparison = _owned_comparison(session, owner, comparison_id)
    slots = set(session.exec(select(ComparisonPane.slot).where(ComparisonPane.comparison_id == comparison.id)).all())
    if verdict == "slot":
        if isinstance(winner_slot, bool) or not isinstance(winner_slot, int) or winner_slot not in slots:
            raise InvalidInput("Say which pane won (a slot of this comparison).")
    elif winner_slot is not None:
        raise InvalidInput("A tie or an all-bad vote has no winning pane.")
    existing = session.exec(select(ComparisonVote.id).where(ComparisonVote.comparison_id == comparison.id)).first()
    if existing is not None:
        raise Conflict("This comparison already has a vote.")
    row = ComparisonVote(comparison_id=comparison.id, owner=owner, verdict=verdict, winner_slot=winner_slot)
    session.add(row)
    session.flush()
    public = ComparisonVotePublic.model_validate(row)
    session.commit()
    return public


def _comparison_details(session: Session, owner: str, comparisons: list[Comparison]) -> list[ComparisonDetail]:
    if not comparisons:
        return []
    ids = [c.id for c in comparisons]
    p, m, cv = ComparisonPane.__table__.c, Message.__table__, Conversation.__table__.c
    message_columns = [m.c[name] for name in MessagePublic.model_fields]
    panes: dict[uuid.UUID, list[ComparisonPanePublic]] = {cid: [] for cid in ids}
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start : chunk_start + 500]
        query = (
            sa.select(p.comparison_id, p.slot, p.cost_usd, cv.system_prompt.label("pane_system_prompt"), *message_columns)
            .join(m, m.c.id == p.message_id)
            .join(Conversation.__table__, cv.id == m.c.conversation_id)
            .where(p.comparison_id.in_(chunk), m.c.owner == owner)
            .order_by(p.comparison_id, p.slot)
        )
        for row in session.execute(query).mappings():
            message = MessagePublic.model_construct(**{k: row[k] for k in MessagePublic.model_fields})
            panes[row["comparison_id"]].append(
                ComparisonPanePublic(slot=row["slot"], conversation_id=row["conversation_id"],
                                     system_prompt=row["pane_system_prompt"], cost_usd=row["cost_usd"], message=message)
            )  # fmt: skip
    votes: dict[uuid.UUID, ComparisonVotePublic] = {}
    hidden: set[uuid.UUID] = set()
    runs = Comparison.__table__
    for chunk_start in range(0, len(ids), 500):
        chunk = ids[chunk_start : chunk_start + 500]
        for v in session.exec(select(ComparisonVote).where(col(ComparisonVote.comparison_id).in_(chunk))).all():
            votes[v.comparison_id] = ComparisonVotePublic.model_validate(v)
        hidden.update(session.execute(sa.select(runs.c.id).where(runs.c.id.in_(chunk), blind.unvoted_blind(runs))).scalars())
    return [
        ComparisonDetail(id=c.id, prompt=c.prompt, blind=c.blind, created_at=c.created_at,
                         panes=[blind.withhold(x) if c.id in hidden else x for x in sorted(panes[c.id], key=lambda x: x.slot)],
                         vote=votes.get(c.id))
        for c in comparisons
    ]  # fmt: skip


@_guarded
def get_comparison(*, session: Session, owner: str, comparison_id: uuid.UUID | str) -> ComparisonDetail:
    """One run: prompt, panes in slot order (with their reply messages and costs) and the vote.

    Until a blind run has its vote, its panes carry nothing that names their models (see blind.withhold).
    """
    owner = check_owner(owner)
    return _comparison_details(session, owner, [_owned_comparison(session, owner, comparison_id)])[0]


@_guarded
def export_comparisons(*, session: Session, owner: str) -> list[ComparisonDetail]:
    """Every run of this owner, oldest first, with panes and votes (for the JSONL and CSV exports).

    Unvoted blind runs come without their models, as get_comparison gives them.
    """
    owner = check_owner(owner)
    rows = session.exec(
        select(Comparison).where(Comparison.owner == owner)
        .order_by(col(Comparison.created_at), col(Comparison.id)).limit(MAX_COMPARISON_EXPORT)
    ).all()  # fmt: skip
    return _comparison_details(session, owner, list(rows))


@_guarded
def comparison_votes(*, session: Session, owner: str | None, blind_only: bool = False) -> list[VoteRecord]:
    """Every vote with the models of its run by slot ("provider:model"); `owner=None` means everyone.

    The leaderboard is built from these. Only the vote's owner scopes it: a run and its panes
    always belong to the voter.
    """
    if owner is not None:
        owner = check_owner(owner)
    v, c, p, m = ComparisonVote.__table__.c, Comparison.__table__.c, ComparisonPane.__table__.c, Message.__table__.c
    query = (
        sa.select(v.comparison_id, v.verdict, v.winner_slot, c.blind, p.slot, m.provider, m.model)
        .join(Comparison.__table__, c.id == v.comparison_id)
        .join(ComparisonPane.__table__, p.comparison_id == v.comparison_id)
        .join(Message.__table__, m.id == p.message_id)
        .order_by(v.created_at, v.comparison_id, p.slot)
    )
    if owner is not None:
        query = query.where(v.owner == owner, c.owner == owner, m.owner == owner)
    if blind_only:
        query = query.where(c.blind.is_(True))
    records: dict[uuid.UUID, VoteRecord] = {}
    for row in session.execute(query).mappings():
        record = records.get(row["comparison_id"])
        if record is None:
            record = records[row["comparison_id"]] = VoteRecord(
                comparison_id=row["comparison_id"], models=[], verdict=row["verdict"],
                winner_slot=row["winner_slot"], blind=bool(row["blind"]),
            )  # fmt: skip
        record.models.append(f"{row['provider']}:{row['model']}")
    return list(records.values())
