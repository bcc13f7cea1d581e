"""The turn lifecycle: a prompt and its pending reply, the reply finished or saved in part, Retry/Undo/Edit, feedback.

begin_turn saves the user's message and a pending placeholder before the provider is called;
finish_turn writes the reply (whole or partial) into it when the stream ends; save_partial keeps the
text of a reply still streaming; mark_interrupted repairs replies a dead process left pending.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import Session

from storage import attachments as stored
from storage.attachments import AttachmentIn, AttachmentLike, check_attachments
from storage.conversations import create_conversation
from storage.errors import InvalidInput, NotFound
from storage.guard import aware, guarded, message_public, owned_conversation, owned_message, rowcount
from storage.models import (
    DEFAULT_TITLE,
    FINISH_REASONS,
    INTERRUPTED,
    MESSAGE_PUBLIC_COLUMNS,
    PENDING,
    Conversation,
    Message,
    MessagePublic,
    Replica,
    ToolCallRecord,
    TurnIds,
    table_of,
    utcnow,
)
from storage.replicas import GRACE_S, INSTANCE_KEY
from storage.tree import AT_LEAF
from storage.validation import auto_title, check_metric, check_name, check_owner, check_params, clean_text, parse_id

_M, _C = table_of(Message), table_of(Conversation)
# The statements every chat turn runs, built once: each call passes only its values. Building an
# update().where().values() per call (its clauses, coercions and cache key) was two thirds of what the
# statement cost to run on SQLite, ~0.2 ms each. An UPDATE given no values sets the columns the call's
# parameters name; the WHERE's parameters are named apart from every column.
_LOCK = (
    sa.update(_C).where(_C.c.id == sa.bindparam("c_id"), _C.c.owner == sa.bindparam("c_owner"))
    .returning(_C.c.current_leaf_id, _C.c.title)
)  # fmt: skip
_NEWEST = (
    sa.select(_M.c.id, _M.c.position, _M.c.role)
    .where(_M.c.conversation_id == sa.bindparam("c_id")).order_by(_M.c.position.desc()).limit(1)
)  # fmt: skip
_INSERT_MESSAGES = sa.insert(_M)
_UPDATE_CONVERSATION = sa.update(_C).where(_C.c.id == sa.bindparam("c_id"))
_FINISH = (
    sa.update(_M)
    .where(_M.c.id == sa.bindparam("m_id"), _M.c.owner == sa.bindparam("m_owner"), _M.c.role == "assistant",
           _M.c.finish_reason.in_((PENDING, INTERRUPTED)))
    .returning(*(_M.c[name] for name in MESSAGE_PUBLIC_COLUMNS))
)  # fmt: skip
_PARTIAL = sa.update(_M).where(
    _M.c.id == sa.bindparam("m_id"), _M.c.owner == sa.bindparam("m_owner"), _M.c.finish_reason == PENDING
)


@guarded
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
    attachments: Sequence[AttachmentLike] = (),
    parent_id: uuid.UUID | str | None = AT_LEAF,
) -> TurnIds:
    """Save the user's message and a pending assistant placeholder in one transaction.

    Call it before the provider is called; call finish_turn with the reply when it ends. The
    conversation remembers `provider:model`, `params` and `system_prompt` as last used, and takes
    its title from `content` when it is still the default and this is the first message.
    `attachments` (storage.attachments.AttachmentIn, or chat.types.Attachment) are stored once per
    owner by content hash and linked to the user message in order; TurnIds.attachment_ids says
    which stored attachment each became.
    The user message follows `parent_id`: AT_LEAF (the current leaf), a message of this
    conversation (Edit: a sibling of that message's child), or None (a new root). The new reply
    becomes the current leaf.
    """
    content = clean_text(content, "message")
    files = check_attachments(attachments) if attachments else []
    return add_turn(session, owner, conversation_id, content, provider, model, params, system_prompt, files=files,
                    parent_id=parent_id)  # fmt: skip


@guarded
def begin_conversation(
    *,
    session: Session,
    owner: str,
    content: str,
    first_prompt: str | None = None,
    provider: str | None = None,
    model: str | None = None,
    params: dict[str, Any] | None = None,
    system_prompt: str | None = None,
    attachments: Sequence[AttachmentLike] = (),
) -> TurnIds:
    """A new chat and its first turn (as begin_turn) in one transaction: a turn that cannot be saved leaves
    no empty chat behind. The chat is titled from `first_prompt` (default: `content`)."""
    content = clean_text(content, "message")
    files = check_attachments(attachments) if attachments else []
    conversation = create_conversation(
        session=session, owner=owner, first_prompt=content if first_prompt is None else first_prompt,
        model=_model_name(provider, model), system_prompt=system_prompt, params=params, commit=False,
    )  # fmt: skip
    return add_turn(session, owner, conversation.id, content, provider, model, params, system_prompt, files=files,
                    new=True)  # fmt: skip


def _model_name(provider: object, model: object) -> str | None:
    """What a conversation remembers as its model: `provider:model`, or whichever of them is given."""
    name = f"{provider}:{model}" if provider and model else provider or model
    return check_name(name, "model")


@guarded
def begin_reply(
    *,
    session: Session,
    owner: str,
    conversation_id: uuid.UUID | str,
    provider: str | None = None,
    model: str | None = None,
    params: dict[str, Any] | None = None,
    system_prompt: str | None = None,
    parent_id: uuid.UUID | str = AT_LEAF,
) -> TurnIds:
    """Add only a pending assistant placeholder, answering `parent_id` (a user message; AT_LEAF: the current leaf).

    Retry: a reply under a user message that has one already becomes its sibling version. The new
    reply becomes the current leaf.
    """
    if parent_id is None:
        raise InvalidInput("A reply needs the user message it answers.")
    return add_turn(session, owner, conversation_id, None, provider, model, params, system_prompt, parent_id=parent_id)


def add_turn(
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
    files: Sequence[AttachmentIn] = (),
    parent_id: object = AT_LEAF,
    new: bool = False,
) -> TurnIds:
    """The user message (unless `content` is None) and a pending reply (begin_turn, begin_reply, comparisons).

    `new`: the conversation was created in this transaction, empty and with the turn's model, params and
    system prompt (begin_conversation, a comparison's new pane): its row, not yet visible to anyone else,
    needs no lock, has no newest message to read, and takes only its leaf.
    """
    owner = check_owner(owner)
    cid = parse_id(conversation_id, "conversation")
    wanted = None if parent_id is None or parent_id == AT_LEAF else parse_id(parent_id, "parent message")
    provider = check_name(provider, "provider")
    model = check_name(model, "model")
    params = check_params(params)
    system_prompt = clean_text(system_prompt, "system prompt", optional=True)
    now = utcnow()
    values: dict[str, Any] = {"updated_at": now}
    if provider or model:
        values["model"] = _model_name(provider, model)
    if params is not None:
        values["params"] = params
    if system_prompt is not None:
        values["system_prompt"] = system_prompt
    if new:
        stored_leaf, title, newest = None, None, None
    else:
        # Writing the conversation first takes its lock (the row on PostgreSQL, the database write lock
        # on SQLite) before the next position is read, so two turns can never claim the same position.
        locked = session.execute(_LOCK, {"c_id": cid, "c_owner": owner, **values}).first()
        if locked is None:
            raise NotFound(f"No conversation with id {str(cid)!r}.")
        stored_leaf, title = locked
        # The newest message gives the next position, and is the current leaf unless one was chosen.
        newest = session.execute(_NEWEST, {"c_id": cid}).first()
    position = 0 if newest is None else newest.position + 1
    parent, parent_role = _parent(session, owner, cid, parent_id, wanted, stored_leaf, newest)
    if content is None and parent_role != "user":
        raise InvalidInput("A reply can only answer a user message.")
    blank = dict(conversation_id=cid, owner=owner, content="", provider=None, model=None, params=None,
                 finish_reason=None, created_at=now, instance_id=None, parent_id=parent)  # fmt: skip
    if files:  # only then: the rows of a turn without files stay exactly as they were
        blank["attachment_count"] = 0
    rows = []
    user_id = user_position = None
    if content is not None:
        user_id, user_position = uuid.uuid4(), position
        rows.append({**blank, "id": user_id, "position": position, "role": "user", "content": content})
        if files:
            rows[-1]["attachment_count"] = len(files)
        position += 1
    assistant_id = uuid.uuid4()
    rows.append(
        {**blank, "id": assistant_id, "position": position, "role": "assistant", "provider": provider,
         "model": model, "params": params, "finish_reason": PENDING, "parent_id": user_id or parent,
         "instance_id": session.info.get(INSTANCE_KEY)}  # which process streams it: see storage.replicas
    )  # fmt: skip
    # One statement for both rows: a round trip less on the path every prompt takes.
    session.execute(_INSERT_MESSAGES, rows)
    leaf: dict[str, Any] = {"current_leaf_id": assistant_id}
    if content is not None and newest is None and title == DEFAULT_TITLE:  # the first message
        leaf["title"] = auto_title(content)
    session.execute(_UPDATE_CONVERSATION, {"c_id": cid, **leaf})
    attachment_ids: list[uuid.UUID] = []
    if files and user_id is not None:
        attachment_ids = stored.store(session, owner, files)
        stored.link(session, user_id, files, attachment_ids)
    if commit:  # begin_comparison commits all its panes' turns at once
        session.commit()
        session.expire_all()
    return TurnIds(
        conversation_id=cid,
        user_message_id=user_id,
        user_position=user_position,
        assistant_message_id=assistant_id,
        assistant_position=position,
        attachment_ids=attachment_ids,
        parent_id=parent,
    )


def _parent(
    session: Session, owner: str, cid: uuid.UUID, given: object, wanted: uuid.UUID | None,
    stored_leaf: uuid.UUID | None, newest: Any,
) -> tuple[uuid.UUID | None, str | None]:  # fmt: skip
    """The new message's parent and its role: the one asked for, else the current leaf (or None)."""
    if given is None:
        return None, None
    if wanted is None:  # AT_LEAF
        if newest is None:
            return None, None
        if stored_leaf is None or stored_leaf == newest.id:  # the usual case: no query
            return newest.id, newest.role
        if stored_leaf == cid:  # EMPTY_PATH
            return None, None
        wanted = stored_leaf
    messages = table_of(Message)
    row = session.execute(
        sa.select(messages.c.conversation_id, messages.c.role).where(messages.c.id == wanted, messages.c.owner == owner)
    ).first()  # fmt: skip
    if given == AT_LEAF and (row is None or row.conversation_id != cid):
        return newest.id, newest.role  # the chosen leaf is gone: the newest message, as the readers show
    if row is None:
        raise NotFound(f"No message with id {str(wanted)!r}.")
    if row.conversation_id != cid:
        raise InvalidInput(f"Message {str(wanted)!r} is not in this conversation.")
    return wanted, row.role


@guarded
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
    request_id: str | None = None,
    sdk_version: str | None = None,
    system_prompt_sha256: str | None = None,
) -> MessagePublic:
    """Write the reply (whole or partial) and its metrics into the pending placeholder.

    `request_id`, `sdk_version` and `system_prompt_sha256` are the reply's reproducibility card (core/repro.py).

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
        request_id=check_name(request_id, "request id"),
        sdk_version=check_name(sdk_version, "SDK version", 64),
        system_prompt_sha256=_card_hash(system_prompt_sha256),
    )
    _check_cache_parts(values)
    # Only overwrite what the placeholder already knows when the caller says something new.
    for name, value in (("provider", provider), ("model", model)):
        if value is not None:
            values[name] = check_name(value, name)
    if params is not None:
        values["params"] = check_params(params)
    mid = parse_id(message_id, "message")
    # One statement writes the reply and reads it back: the checks below are its WHERE (a round trip less
    # on the path every reply takes; PostgreSQL's append was over its 5 ms at a million messages).
    row = session.execute(_FINISH, {"m_id": mid, "m_owner": owner, **values}).first()
    if row is None:  # nothing written: say why (no such message of this owner, not a reply, or finished)
        found = owned_message(session, owner, mid)
        if found.role != "assistant":
            raise InvalidInput("Only an assistant reply can be finished.")
        raise InvalidInput("This reply is already finished.")
    session.execute(_UPDATE_CONVERSATION, {"c_id": row.conversation_id, "updated_at": utcnow()})
    public = MessagePublic.model_validate(dict(row._mapping))
    session.commit()
    return public


def _card_hash(value: str | None) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) != 16 or value.strip("0123456789abcdef")):
        raise InvalidInput("The system prompt's hash must be 16 lowercase hex digits.")
    return value


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


@guarded
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
    result = session.execute(_PARTIAL, {"m_id": mid, "m_owner": owner, "content": content, "reasoning": reasoning})
    session.commit()
    return rowcount(result) == 1


@guarded
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
    table = table_of(Message)
    query = sa.update(table).where(table.c.finish_reason == PENDING)
    if instance_id is not None:
        query = query.where(table.c.instance_id == check_name(instance_id, "instance id"))
    else:
        cutoff = utcnow() - grace
        replicas = table_of(Replica)
        alive = sa.exists().where(replicas.c.id == table.c.instance_id, replicas.c.last_seen >= cutoff)
        query = query.where(table.c.created_at < cutoff, ~alive)
    before = aware(before, "cut-off time")
    if before is not None:
        query = query.where(table.c.created_at < before)
    result = session.execute(query.values(finish_reason=INTERRUPTED))
    session.commit()
    return rowcount(result)


@guarded
def truncate_after(*, session: Session, owner: str, conversation_id: uuid.UUID | str, position: int) -> int:
    """Delete the messages at `position` and after it (Retry, Undo, Edit); returns how many went."""
    owner = check_owner(owner)
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise InvalidInput("The position must be a whole number from 0.")
    conversation = owned_conversation(session, owner, conversation_id)
    table = table_of(Message)
    linked = stored.linked_from(session, owner, conversation.id, position)
    doomed = [table.c.conversation_id == conversation.id, table.c.owner == owner, table.c.position >= position]
    # Counted first: SQLite's row count leaves out the rows that a parent's cascade took with it.
    count = session.execute(sa.select(sa.func.count()).where(*doomed)).scalar_one()
    session.execute(sa.delete(table).where(*doomed))
    stored.drop_unlinked(session, owner, linked)  # the files only those messages carried
    conversation.updated_at = utcnow()
    session.commit()
    return int(count)


@guarded
def set_feedback(
    *, session: Session, owner: str, message_id: uuid.UUID | str, feedback: Literal["like", "dislike"] | None
) -> MessagePublic:
    """Record a like or dislike on an assistant reply (None clears it)."""
    owner = check_owner(owner)
    if feedback not in ("like", "dislike", None):
        raise InvalidInput("Feedback must be 'like', 'dislike' or nothing.")
    row = owned_message(session, owner, message_id)
    if row.role != "assistant":
        raise InvalidInput("Only an assistant reply can be liked or disliked.")
    row.feedback = feedback
    session.flush()
    public = message_public(row)
    session.commit()
    return public

