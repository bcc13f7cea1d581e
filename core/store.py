"""Storage steps a chat turn runs together in one worker-thread call, and how a flagged reply is stored.

A conversation is a tree of messages; the chat shows one path of it (root to the current leaf). Retry
adds a sibling reply, Edit a sibling user message, Undo moves the current leaf back: nothing stored is
ever removed by them (only deleting a branch or the conversation removes messages).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlmodel import Session

from storage import attachments as stored
from storage import repository as repo
from storage.attachments import AttachmentIn
from storage.errors import NotFound
from storage.models import AttachmentData, MessagePublic, TurnIds
from storage.tree import get_path_user_messages

#: How the stored error of a reply refused by moderation starts (so a reopened conversation marks it too).
FLAGGED_ERROR = "flagged by moderation"


def _norm(text: str) -> str:
    return " ".join((text or "").split())


def same_turns(shown: Sequence[str], stored: Sequence[str]) -> bool:
    """True when the chat's user texts are the stored ones (whitespace aside)."""
    return len(shown) == len(stored) and all(_norm(a) == _norm(b) for a, b in zip(shown, stored))


_same_turns = same_turns


def _is_retry(message: MessagePublic, content: str, attachments: Sequence[AttachmentIn]) -> bool:
    """The chat sends `message` again: same text, and no files or the same files by name (Gradio's Retry
    sends the message's files again; different files make it an Edit)."""
    if _norm(message.content) != _norm(content):
        return False
    return not attachments or [a.name for a in attachments] == [a.name for a in message.attachments]


def start_turn(
    *,
    session: Session,
    owner: str,
    conversation_id: str | None,
    history_user_texts: list[str],
    content: str,
    provider: str,
    model: str,
    system_prompt: str,
    params: dict[str, Any],
    attachments: Sequence[AttachmentIn] = (),
) -> TurnIds:
    """Save the user message (with its files) and a pending reply where the chat shows them in the tree.

    A new conversation is created when none is open (or the open one was deleted). The chat's user
    messages (`history_user_texts`) are a prefix of the stored path's: when they are all of them, the
    turn continues the path; when the chat shows fewer (Gradio's Retry and Edit cut the chat back), the
    next stored user message is sent again (Retry: a new reply to it, a sibling of its old reply; no
    user message is stored) or replaced (Edit: a sibling user message, a new root for the first
    message, so the conversation stays the same one). A chat that does not match the stored path (a
    stale page, a client that lost its history) starts a new conversation instead: nothing saved is
    ever rewritten from a page that does not show it.
    """
    if conversation_id:
        try:
            users = get_path_user_messages(session=session, owner=owner, conversation_id=conversation_id)
        except NotFound:
            conversation_id = None
        else:
            keep = len(history_user_texts)
            if not _same_turns(history_user_texts, [m.content for m in users[:keep]]):
                conversation_id = None
            elif len(users) > keep:
                again = users[keep]
                if _is_retry(again, content, attachments):
                    return repo.begin_reply(
                        session=session, owner=owner, conversation_id=conversation_id, parent_id=again.id,
                        provider=provider, model=model, params=params, system_prompt=system_prompt or None,
                    )
                return repo.begin_turn(
                    session=session, owner=owner, conversation_id=conversation_id, content=content,
                    provider=provider, model=model, params=params, system_prompt=system_prompt or None,
                    attachments=attachments, parent_id=again.parent_id,
                )
    if not conversation_id:
        # A message of files only is titled by its files' names.
        first = content if content.strip() else ", ".join(a.name for a in attachments)
        return repo.begin_conversation(
            session=session, owner=owner, content=content, first_prompt=first, provider=provider, model=model,
            params=params, system_prompt=system_prompt or None, attachments=attachments,
        )
    # Under the current leaf: the next turn of the path shown (a new root when Undo emptied it).
    return repo.begin_turn(
        session=session, owner=owner, conversation_id=conversation_id, content=content,
        provider=provider, model=model, params=params, system_prompt=system_prompt or None,
        attachments=attachments,
    )


def history_files(*, session: Session, owner: str, conversation_id: str,
                  history_user_texts: list[str]) -> list[list[AttachmentData]]:
    """The stored files of each user message the chat shows (in order, along the current path), for the
    context of the next turn.

    Empty when the conversation has none, or when the store does not hold what the chat shows
    (start_turn then starts a new conversation: the chat's own texts are all the context there is).
    """
    try:
        files = stored.conversation_attachments(session=session, owner=owner, conversation_id=conversation_id)
        if not files:
            return []
        detail = repo.get_conversation(session=session, owner=owner, conversation_id=conversation_id)
    except NotFound:
        return []
    users = [m for m in detail.messages if m.role == "user"][: len(history_user_texts)]
    if not _same_turns(history_user_texts, [m.content for m in users]):
        return []
    # Keyed by position, which is unique in the conversation (creation order), whatever branch a message is on.
    return [list(files.get(m.position, [])) for m in users]


def _undo_at(session: Session, owner: str, conversation_id: str, messages: list[MessagePublic], cut: MessagePublic) -> int:
    """Move the current leaf to `cut`'s parent (an empty path for the first message); how many messages left the path."""
    repo.set_leaf(session=session, owner=owner, conversation_id=conversation_id, message_id=cut.parent_id)
    return len(messages) - messages.index(cut)


def undo_last_turn(*, session: Session, owner: str, conversation_id: str, history_user_texts: list[str]) -> int:
    """Undo: the last user turn and its reply leave the path shown, if the store matches what the chat showed.

    Nothing is deleted: the turn stays in the tree as another version. The chat may arrive before or
    after Gradio's own undo popped the turn, so both a chat that shows every stored turn and one that
    shows all but the last are accepted. Returns how many messages left the path.
    """
    detail = repo.get_conversation(session=session, owner=owner, conversation_id=conversation_id)
    users = [m for m in detail.messages if m.role == "user"]
    texts = [m.content for m in users]
    if users and _same_turns(history_user_texts, texts):
        cut = users[-1]
    elif users and _same_turns(history_user_texts, texts[:-1]):
        cut = users[len(history_user_texts)]
    else:
        return 0
    return _undo_at(session, owner, conversation_id, detail.messages, cut)


def undo_turn(*, session: Session, owner: str, conversation_id: str, kept_user_texts: list[str], undone: str) -> int:
    """Undo of one user message: it and what follows leave the path shown, if it is the stored one.

    `kept_user_texts` are the stored user texts the chat shows before the undone message (the same
    whether Gradio's own undo has already popped it or not). A message that was never saved (a
    refused one) has no stored counterpart at that place, so nothing changes. Nothing is deleted:
    the current leaf moves to the undone message's parent. Returns how many messages left the path.
    """
    detail = repo.get_conversation(session=session, owner=owner, conversation_id=conversation_id)
    users = [m for m in detail.messages if m.role == "user"]
    keep = len(kept_user_texts)
    if len(users) <= keep or not same_turns(kept_user_texts, [m.content for m in users[:keep]]):
        return 0
    if _norm(users[keep].content) != _norm(undone):
        return 0
    return _undo_at(session, owner, conversation_id, detail.messages, users[keep])
