"""Export and import of chats (the file format itself is storage/transfer.py)."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from storage import transfer
from storage.conversations import messages_of
from storage.errors import InvalidInput
from storage.guard import aware, conversation_public, guarded, owned_conversation
from storage.models import INTERRUPTED, KIND_CHAT, PENDING, Conversation, ConversationDetail, Message, table_of, utcnow
from storage.validation import check_owner, clean_text, clean_title

PANE_NOT_EXPORTED = "This conversation is a pane of a comparison, not a chat: export comparisons from the Compare tab."


def _details(session: Session, owner: str, conversation_id: object) -> list[ConversationDetail]:
    # Chats only: comparisons have their own export (export_comparisons), and a pane in this file
    # would come back from import_json as an ordinary chat, its blind model named.
    if conversation_id is not None:
        conversation = owned_conversation(session, owner, conversation_id)
        if conversation.kind != KIND_CHAT:
            raise InvalidInput(PANE_NOT_EXPORTED)
        conversations = [conversation]
    else:
        query = select(Conversation).where(Conversation.owner == owner, Conversation.kind == KIND_CHAT)
        conversations = list(session.exec(query.order_by(col(Conversation.created_at), col(Conversation.id))).all())
    messages = messages_of(session, owner, [c.id for c in conversations])
    return [ConversationDetail(conversation=conversation_public(c), messages=messages[c.id]) for c in conversations]


@guarded
def export_json(*, session: Session, owner: str, conversation_id: uuid.UUID | str | None = None) -> str:
    """One chat (or, with no id, all of this owner's chats) as Parley JSON, which import_json reads."""
    owner = check_owner(owner)
    return transfer.to_json(transfer.build_export(_details(session, owner, conversation_id)))


@guarded
def export_markdown(*, session: Session, owner: str, conversation_id: uuid.UUID | str | None = None) -> str:
    """One chat (or all of this owner's chats) as Markdown in which any HTML stays plain text."""
    owner = check_owner(owner)
    return transfer.to_markdown(_details(session, owner, conversation_id))


@guarded
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
        created_at = aware(item.created_at, "creation time") or now
        conversation_rows.append(
            dict(id=cid, owner=owner, title=clean_title(item.title), model=item.model,
                 system_prompt=clean_text(item.system_prompt, "system prompt", optional=True),
                 params=item.params, pinned=item.pinned, archived=item.archived,
                 created_at=created_at, updated_at=aware(item.updated_at, "update time") or created_at)
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
                created_at=aware(msg.created_at, "message time") or created_at,
            )  # fmt: skip
            message_rows.append(values)
    if conversation_rows:
        session.execute(sa.insert(table_of(Conversation)), conversation_rows)
    if message_rows:
        session.execute(sa.insert(table_of(Message)), message_rows)
    session.commit()
    return created

