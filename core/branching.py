"""A turn placed anywhere in a conversation's tree by naming its parent (the `/send` API).

The chat tab places a turn by what it shows: core.store.start_turn compares the chat's user messages
with the stored path. An API client has no chat to compare, so it names the place instead: the
conversation and the message the new one goes under. The model is then sent the stored path down to
that message, so what it sees is exactly the branch the turn continues, whatever the client remembers.

- no conversation: a new conversation;
- a conversation and no parent: the next turn after its current leaf (what the chat shows);
- a reply as the parent: a new user message under it (a new branch from there, or an Edit of the
  user message that followed it);
- a user message as the parent: a new reply to it, a sibling of its earlier replies (Retry: no user
  message is stored, so the message must be empty or that message's text);
- `ROOT` as the parent: a new first message (Edit of the first message), in the same conversation.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session

from chat.types import Message
from core.store import FLAGGED_ERROR, same_turns
from storage import attachments as stored
from storage import repository as repo
from storage.attachments import AttachmentIn
from storage.errors import InvalidInput, NotFound
from storage.models import AttachmentData, MessagePublic, TurnIds

#: The parent that starts a new first message (a sibling root of the conversation's first message).
ROOT = "root"
#: Longest id read from a client (a UUID is 36 characters); longer is refused unread.
MAX_ID = 64

NO_CONVERSATION = "parent_id needs the conversation_id it belongs to: nothing was sent or saved."
NOT_YOURS = "conversation_id is not one of your conversations, or it no longer exists: nothing was sent or saved."
NOT_IN_IT = "parent_id is not a message of this conversation: nothing was sent or saved."
RETRY_TEXT = ("parent_id is a user message, so this turn is a new reply to it (a retry) and stores no message of its "
              "own: send an empty message (or that message's text). To replace the message, give its parent instead.")


class PlaceProblem(ValueError):
    """The place a client named cannot take a turn; `message` says why, in words the client can act on."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Place:
    """Where a turn goes in the tree, and the stored path above it as the model's context."""

    #: None: a new conversation.
    conversation_id: str | None = None
    #: The new user message's parent (None: a root).
    parent_id: uuid.UUID | None = None
    #: A user message the turn answers again (Retry): no user message is stored, its text is the prompt.
    retry_of: uuid.UUID | None = None
    retry_text: str = ""
    #: The stored path down to the new message (the retried message included), flagged turns left out.
    context: list[Message] = field(default_factory=list)
    #: The stored files of each user message in `context`, in order (core.attachments.with_history's shape).
    files: list[list[AttachmentData]] = field(default_factory=list)


def _checked_id(value: str, name: str, problem: str) -> uuid.UUID:
    if len(value) > MAX_ID:
        raise PlaceProblem(problem)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise PlaceProblem(f"{name} {value[:40]!r} is not a valid id: nothing was sent or saved.") from None


def _path_to(session: Session, owner: str, path: list[MessagePublic], cid: uuid.UUID, pid: uuid.UUID) -> list[MessagePublic]:
    """Root to `pid` by parent links: a prefix of the shown path, or (another branch) read from the whole tree."""
    for i, m in enumerate(path):
        if m.id == pid:
            return path[: i + 1]
    tree = repo.tree_of(session=session, owner=owner, conversation_ids=[cid])
    by_id = {m.id: m for messages in tree.values() for m in messages}
    found: list[MessagePublic] = []
    at = by_id.get(pid)
    while at is not None:
        found.append(at)
        at = by_id.get(at.parent_id) if at.parent_id is not None else None
    if not found:
        raise PlaceProblem(NOT_IN_IT)
    return found[::-1]


def context_of(path: list[MessagePublic]) -> tuple[list[Message], list[MessagePublic]]:
    """The model's context from a stored path, as the chat would send it, and the user messages in it.

    A flagged turn (the message and its refusal) is never sent; a reply without text (it failed) is left
    out, as the chat leaves out its error notice.
    """
    flagged = {m.parent_id for m in path if m.role == "assistant" and (m.error or "").startswith(FLAGGED_ERROR)}
    out: list[Message] = []
    users: list[MessagePublic] = []
    for m in path:
        if m.id in flagged or (m.role == "assistant" and m.parent_id in flagged):
            continue
        if m.role == "user":
            out.append(Message(role="user", content=m.content))
            users.append(m)
        elif m.role == "assistant" and m.content:
            if out and out[-1].role == "assistant":
                out[-1] = Message(role="assistant", content=out[-1].content + "\n\n" + m.content)
            else:
                out.append(Message(role="assistant", content=m.content))
    return out, users


def place(*, session: Session, owner: str, conversation_id: str | None, parent_id: str | None, text: str) -> Place:
    """Check the place a client named (its conversation, its parent) and read the path above it."""
    cid_text = (conversation_id or "").strip()
    pid_text = (parent_id or "").strip().lower()
    if not cid_text:
        if pid_text:
            raise PlaceProblem(NO_CONVERSATION)
        return Place()
    cid = _checked_id(cid_text, "conversation_id", NOT_YOURS)
    try:
        detail = repo.get_conversation(session=session, owner=owner, conversation_id=cid)
    except (NotFound, InvalidInput):
        raise PlaceProblem(NOT_YOURS) from None
    shown = detail.messages
    if pid_text == ROOT:
        return Place(conversation_id=str(cid))
    if not pid_text:  # the current leaf: what the chat shows
        path = shown
    else:
        path = _path_to(session, owner, shown, cid, _checked_id(pid_text, "parent_id", NOT_IN_IT))
    context, users = context_of(path)
    files = _files(session, owner, cid, users)
    anchor = path[-1] if path else None
    if pid_text and anchor is not None and anchor.role == "user":
        if text.strip() and not same_turns([text], [anchor.content]):
            raise PlaceProblem(RETRY_TEXT)
        return Place(conversation_id=str(cid), retry_of=anchor.id, retry_text=anchor.content, context=context, files=files)
    return Place(conversation_id=str(cid), parent_id=anchor.id if anchor else None, context=context, files=files)


def _files(session: Session, owner: str, cid: uuid.UUID, users: list[MessagePublic]) -> list[list[AttachmentData]]:
    """The stored files of these user messages, in order (one query, only when one of them has files)."""
    if not any(m.attachments for m in users):
        return []
    by_position = stored.conversation_attachments(session=session, owner=owner, conversation_id=cid)
    return [list(by_position.get(m.position, [])) for m in users]


def begin_at(*, session: Session, owner: str, at: Place, content: str, provider: str, model: str, system_prompt: str,
             params: dict[str, Any], attachments: list[AttachmentIn] | tuple[AttachmentIn, ...] = ()) -> TurnIds:
    """Save the turn where `at` says: a new conversation, a new reply to a user message, or a user message and its reply."""
    system = system_prompt or None
    if at.conversation_id is None:
        first = content if content.strip() else ", ".join(a.name for a in attachments)
        conv = repo.create_conversation(session=session, owner=owner, first_prompt=first,
                                        model=f"{provider}:{model}", system_prompt=system, params=params)
        return repo.begin_turn(session=session, owner=owner, conversation_id=conv.id, content=content, provider=provider,
                               model=model, params=params, system_prompt=system, attachments=attachments)
    if at.retry_of is not None:
        return repo.begin_reply(session=session, owner=owner, conversation_id=at.conversation_id, parent_id=at.retry_of,
                                provider=provider, model=model, params=params, system_prompt=system)
    return repo.begin_turn(session=session, owner=owner, conversation_id=at.conversation_id, content=content,
                           provider=provider, model=model, params=params, system_prompt=system,
                           attachments=attachments, parent_id=at.parent_id)
