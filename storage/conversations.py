"""Conversations: create, list, open, rename, pin, archive, delete."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from storage import attachments as stored
from storage import blind
from storage.errors import InvalidInput, NotFound
from storage.guard import conversation_public, guarded, owned_conversation, rowcount
from storage.models import (
    CONVERSATION_KINDS,
    KIND_CHAT,
    Conversation,
    ConversationCreate,
    ConversationDetail,
    ConversationPublic,
    table_of,
)
from storage.tree import messages_of as messages_of  # the whole trees, for the exports
from storage.tree import path_detail
from storage.validation import auto_title, check_name, check_owner, check_params, clean_text, clean_title, parse_id

MAX_PAGE = 500


_INSERT = sa.insert(table_of(Conversation))  # built once: each new chat passes only its row


@guarded
def create_conversation(
    *,
    session: Session,
    owner: str,
    title: str | None = None,
    first_prompt: str | None = None,
    model: str | None = None,
    system_prompt: str | None = None,
    params: dict[str, Any] | None = None,
    commit: bool = True,
) -> ConversationPublic:
    """A new empty conversation; its title is `title`, else cut from `first_prompt`, else "New chat".

    `commit=False` leaves it in the session's transaction (written, not committed): a chat's first turn saves
    the conversation and the turn in one commit (core.store.start_turn), so a turn that fails to save leaves
    no empty conversation behind.
    """
    owner = check_owner(owner)
    data = ConversationCreate(
        title=clean_title(title) if title is not None else auto_title(first_prompt),
        model=check_name(model, "model"),
        system_prompt=clean_text(system_prompt, "system prompt", optional=True),
        params=check_params(params),
    )
    row = Conversation.model_validate(data, update={"owner": owner})
    # One INSERT, without the ORM's unit of work (a third of a first turn's storage time): the row is not
    # kept in the session, and callers read the returned copy.
    session.execute(_INSERT, row.model_dump())
    if commit:
        session.commit()
    return conversation_public(row)


@guarded
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
    return [conversation_public(r) for r in rows]


@guarded
def get_conversation(*, session: Session, owner: str, conversation_id: uuid.UUID | str) -> ConversationDetail:
    """One conversation with its current path, versions and leaf (storage.tree.get_path; NotFound for a
    pane of an unvoted blind comparison)."""
    owner = check_owner(owner)
    return path_detail(session, owner, owned_conversation(session, owner, conversation_id))


@guarded
def rename_conversation(
    *, session: Session, owner: str, conversation_id: uuid.UUID | str, title: str
) -> ConversationPublic:
    """Give a conversation a new title (one line, 1 to 200 characters)."""
    owner = check_owner(owner)
    title = clean_title(title)
    row = owned_conversation(session, owner, conversation_id)
    row.title = title
    public = conversation_public(row)
    session.commit()
    return public


@guarded
def set_pinned(*, session: Session, owner: str, conversation_id: uuid.UUID | str, pinned: bool) -> ConversationPublic:
    """Pin (listed first) or unpin a conversation."""
    return _set_flag(session, owner, conversation_id, "pinned", pinned)


@guarded
def set_archived(
    *, session: Session, owner: str, conversation_id: uuid.UUID | str, archived: bool
) -> ConversationPublic:
    """Archive (hidden from the default list) or restore a conversation."""
    return _set_flag(session, owner, conversation_id, "archived", archived)


def _set_flag(session: Session, owner: str, conversation_id: object, name: str, value: object) -> ConversationPublic:
    owner = check_owner(owner)
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false.")
    row = owned_conversation(session, owner, conversation_id)
    setattr(row, name, value)
    public = conversation_public(row)
    session.commit()
    return public


@guarded
def delete_conversation(*, session: Session, owner: str, conversation_id: uuid.UUID | str) -> None:
    """Delete a conversation, (by cascade) its messages, and the files only it carried."""
    owner = check_owner(owner)
    cid = parse_id(conversation_id, "conversation")
    linked = stored.linked_from(session, owner, cid)
    # Core delete so the database's ON DELETE CASCADE removes the messages (and their index rows).
    result = session.execute(
        sa.delete(table_of(Conversation)).where(
            table_of(Conversation).c.id == cid, table_of(Conversation).c.owner == owner
        )
    )
    if rowcount(result) == 0:
        raise NotFound(f"No conversation with id {str(cid)!r}.")
    stored.drop_unlinked(session, owner, linked)  # the files no other message of this owner carries
    session.commit()
    session.expire_all()

