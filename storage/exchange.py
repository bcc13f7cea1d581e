"""Export and import of chats (the file format itself is storage/transfer.py).

The JSON export carries each chat's whole message tree and its current leaf; the Markdown export
its current path only, with a line counting the messages of other versions it leaves out.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from storage import attachments as stored
from storage import markdown, transfer
from storage.attachments import AttachmentIn, AttachmentLike, check_attachment
from storage.errors import InvalidInput, StorageError
from storage.guard import aware, conversation_public, guarded, owned_conversation
from storage.models import (
    INTERRUPTED,
    KIND_CHAT,
    PENDING,
    Conversation,
    ConversationDetail,
    Message,
    MessagePublic,
    table_of,
    utcnow,
)
from storage.tree import resolve_leaf, tree_of
from storage.validation import check_owner, clean_text, clean_title

PANE_NOT_EXPORTED = "This conversation is a pane of a comparison, not a chat: export comparisons from the Compare tab."
UNCHECKED_FILES = "This export carries files, and files are imported only once checked; nothing was imported."

#: Re-checks an imported file's bytes and says what they are (core passes chat's ingest): called with
#: the file's name and bytes, it returns the file as it will be stored, or raises ValueError (its
#: `.message`, else its text, is shown).
AttachmentChecker = Callable[[str, bytes], AttachmentLike]


def _details(session: Session, owner: str, conversation_id: object) -> list[ConversationDetail]:
    """Each chat with its whole tree (by position) and its current leaf (None: nothing shown)."""
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
    trees = tree_of(session, owner, [c.id for c in conversations])  # one query for every chat
    details = []
    for c in conversations:
        messages = trees[c.id]
        ids = {m.id for m in messages}
        leaf = resolve_leaf(c.id, c.current_leaf_id, messages[-1].id if messages else None, ids)
        details.append(ConversationDetail(conversation=conversation_public(c), messages=messages, current_leaf_id=leaf))
    return details


def _path(detail: ConversationDetail) -> ConversationDetail:
    """The detail with its current path only, counting the messages left out (as storage.tree reads it)."""
    by_id = {m.id: m for m in detail.messages}
    path: list[MessagePublic] = []
    node = detail.current_leaf_id
    while node is not None:
        path.append(by_id[node])
        node = by_id[node].parent_id
    path.reverse()
    return detail.model_copy(update={"messages": path, "other_messages": len(by_id) - len(path)})


@guarded
def export_json(
    *, session: Session, owner: str, conversation_id: uuid.UUID | str | None = None, max_bytes: int | None = None
) -> str:
    """One chat (or, with no id, all of this owner's chats) as Parley JSON, which import_json reads.

    Files go in as base64; when they would make the file larger than `max_bytes` (the deployment's
    import limit; at most transfer.MAX_IMPORT_BYTES) the export is refused before any byte is read.
    """
    owner = check_owner(owner)
    limit = transfer.MAX_IMPORT_BYTES if max_bytes is None else min(max_bytes, transfer.MAX_IMPORT_BYTES)
    details = _details(session, owner, conversation_id)
    refs = [a for d in details for m in d.messages for a in m.attachments]
    # Each message carries its files as base64; an export an import could not read back is refused
    # before any byte is loaded.
    encoded = sum((a.size + 2) // 3 * 4 for a in refs)
    if encoded > limit:
        raise InvalidInput(
            f"These chats carry {encoded / 1e6:.0f} MB of files (as base64); a JSON export holds at most "
            f"{limit / 1e6:.0f} MB, what an import reads back. Export the chats one at a time."
        )
    files = stored.data_of(session, owner, {a.id for a in refs}) if refs else {}
    return transfer.to_json(transfer.build_export(details, files))


@guarded
def export_markdown(*, session: Session, owner: str, conversation_id: uuid.UUID | str | None = None) -> str:
    """One chat (or all of this owner's chats) as Markdown in which any HTML stays plain text."""
    owner = check_owner(owner)
    return markdown.to_markdown([_path(d) for d in _details(session, owner, conversation_id)])


@guarded
def import_json(
    *, session: Session, owner: str, data: str | bytes, check_attachment: AttachmentChecker | None = None
) -> list[uuid.UUID]:
    """Add the conversations of a Parley JSON export to `owner`, with new ids; all or nothing.

    Each keeps its tree and its current leaf; a file without `parent` fields (made before trees)
    comes in as one chain per conversation. The file is validated completely before anything is
    written (parents must come before their children); a bad file raises InvalidInput.
    Replies that were still pending when exported come in as "interrupted". Files in it must match
    their sha256 and pass `check_attachment` (storage cannot tell a PNG from a script: core passes
    chat's ingest); a file with attachments and no checker is refused. Files from before
    attachments existed import as they always did.
    """
    owner = check_owner(owner)
    document = transfer.parse_import(data)
    checked = _check_files(document, check_attachment)
    now = utcnow()
    created: list[uuid.UUID] = []
    conversation_rows: list[dict[str, Any]] = []
    message_rows: list[dict[str, Any]] = []
    links: list[tuple[uuid.UUID, list[AttachmentIn]]] = []
    for item in document.conversations:
        cid = uuid.uuid4()
        created.append(cid)
        created_at = aware(item.created_at, "creation time") or now
        new_ids = [uuid.uuid4() for _ in item.messages]
        conversation_rows.append(
            dict(id=cid, owner=owner, title=clean_title(item.title), model=item.model,
                 system_prompt=clean_text(item.system_prompt, "system prompt", optional=True),
                 params=item.params, pinned=item.pinned, archived=item.archived,
                 created_at=created_at, updated_at=aware(item.updated_at, "update time") or created_at,
                 current_leaf_id=_leaf(cid, new_ids, item.current))
        )  # fmt: skip
        # Rows in file order, so every parent is written before its children (transfer checked it).
        for position, msg in enumerate(item.messages):
            parent = msg.parent_index(position)
            values = msg.model_dump(exclude={"id", "parent", "tool_calls", "created_at", "usage", "attachments"})
            values.update(**msg.usage_columns())
            values.update(
                id=new_ids[position], conversation_id=cid, owner=owner, position=position,
                parent_id=None if parent is None else new_ids[parent],
                content=clean_text(msg.content, "message"),
                reasoning=clean_text(msg.reasoning, "reasoning", optional=True),
                error=clean_text(msg.error, "error", optional=True),
                finish_reason=INTERRUPTED if msg.finish_reason == PENDING else msg.finish_reason,
                tool_calls=None if msg.tool_calls is None else [t.model_dump() for t in msg.tool_calls],
                created_at=aware(msg.created_at, "message time") or created_at,
                attachment_count=len(msg.attachments or ()),
            )  # fmt: skip
            message_rows.append(values)
            if msg.attachments:
                links.append((values["id"], [checked[id(f)] for f in msg.attachments]))
    if conversation_rows:
        session.execute(sa.insert(table_of(Conversation)), conversation_rows)
    if message_rows:
        session.execute(sa.insert(table_of(Message)), message_rows)
    if links:
        all_files = [f for _, files in links for f in files]
        ids = iter(stored.store(session, owner, all_files))
        for message_id, files in links:
            stored.link(session, message_id, files, [next(ids) for _ in files])
    session.commit()
    return created


def _leaf(conversation_id: uuid.UUID, ids: list[uuid.UUID], current: int | None) -> uuid.UUID | None:
    """conversation.current_leaf_id for a file's `current`: the message, or nothing shown (-1)."""
    if current is None:
        return ids[-1] if ids else None  # the newest, as a file without `current` always showed
    return conversation_id if current == -1 else ids[current]  # the conversation's own id: nothing shown


def _check_files(document: transfer.ExportFile, checker: AttachmentChecker | None) -> dict[int, AttachmentIn]:
    """Each file of the document (by id() of its entry) as it will be stored, or InvalidInput.

    The checker sees each distinct content once; the name each message gave a file stays its own.
    """
    checked: dict[int, AttachmentIn] = {}
    by_hash: dict[str, AttachmentIn] = {}
    for number, item in enumerate(document.conversations, start=1):
        for position, msg in enumerate(item.messages, start=1):
            for entry in msg.attachments or ():
                where = f"Conversation {number} ({item.title[:60]!r}), message {position}"
                if checker is None:
                    raise InvalidInput(UNCHECKED_FILES)
                try:
                    if entry.sha256 not in by_hash:
                        by_hash[entry.sha256] = check_attachment(checker(entry.name, entry.decoded()))
                    name = stored.clean_name(entry.name)
                except StorageError as e:
                    raise InvalidInput(f"{where}: {e.message}") from e
                except ValueError as e:
                    raise InvalidInput(f"{where}: {getattr(e, 'message', None) or e}") from e
                checked[id(entry)] = by_hash[entry.sha256].model_copy(update={"name": name})
    return checked

