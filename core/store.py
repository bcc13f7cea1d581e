"""Storage steps a chat turn runs together in one worker-thread call, and how a flagged reply is stored."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlmodel import Session

from storage import attachments as stored
from storage import repository as repo
from storage.attachments import AttachmentIn
from storage.errors import NotFound
from storage.models import AttachmentData, TurnIds

#: How the stored error of a reply refused by moderation starts (so a reopened conversation marks it too).
FLAGGED_ERROR = "flagged by moderation"


def _norm(text: str) -> str:
    return " ".join((text or "").split())


def same_turns(shown: Sequence[str], stored: Sequence[str]) -> bool:
    """True when the chat's user texts are the stored ones (whitespace aside)."""
    return len(shown) == len(stored) and all(_norm(a) == _norm(b) for a, b in zip(shown, stored))


_same_turns = same_turns


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
    """Save the user message (with its files) and a pending reply, first making the store agree with the chat.

    A new conversation is created when none is open (or the open one was deleted). When the
    chat shows fewer user turns than are stored (Retry, Undo, Edit), the stored turns after
    them are removed first, so what is saved is always what the user sees. Stored turns are
    only ever removed when the chat's user messages match the stored ones: a chat that does
    not match what is stored (a stale page, a client that lost its history) starts a new
    conversation instead, so nothing saved is lost.
    """
    if conversation_id:
        try:
            detail = repo.get_conversation(session=session, owner=owner, conversation_id=conversation_id)
        except NotFound:
            conversation_id = None
        else:
            users = [m for m in detail.messages if m.role == "user"]
            keep = len(history_user_texts)
            if not _same_turns(history_user_texts, [m.content for m in users[:keep]]):
                conversation_id = None
            elif len(users) > keep:
                retry_of_first = keep == 0 and _norm(users[0].content) == _norm(content)
                if keep == 0 and not retry_of_first:
                    conversation_id = None  # an empty chat that is not a Retry: keep the stored turns
                else:
                    repo.truncate_after(session=session, owner=owner, conversation_id=conversation_id, position=users[keep].position)
    if not conversation_id:
        # A message of files only is titled by its files' names.
        first = content if content.strip() else ", ".join(a.name for a in attachments)
        conv = repo.create_conversation(
            session=session, owner=owner, first_prompt=first,
            model=f"{provider}:{model}", system_prompt=system_prompt or None, params=params,
        )
        conversation_id = str(conv.id)
    return repo.begin_turn(
        session=session, owner=owner, conversation_id=conversation_id, content=content,
        provider=provider, model=model, params=params, system_prompt=system_prompt or None,
        attachments=attachments,
    )


def history_files(*, session: Session, owner: str, conversation_id: str,
                  history_user_texts: list[str]) -> list[list[AttachmentData]]:
    """The stored files of each user message the chat shows (in order), for the context of the next turn.

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
    return [list(files.get(m.position, [])) for m in users]


def undo_last_turn(*, session: Session, owner: str, conversation_id: str, history_user_texts: list[str]) -> int:
    """Undo: remove the last user turn and its reply, if the store matches what the chat showed.

    The chat may arrive before or after Gradio's own undo popped the turn, so both a chat that
    shows every stored turn and one that shows all but the last are accepted.
    """
    detail = repo.get_conversation(session=session, owner=owner, conversation_id=conversation_id)
    stored = [m for m in detail.messages if m.role == "user"]
    texts = [m.content for m in stored]
    if stored and _same_turns(history_user_texts, texts):
        cut = stored[-1]
    elif stored and _same_turns(history_user_texts, texts[:-1]):
        cut = stored[len(history_user_texts)]
    else:
        return 0
    return repo.truncate_after(session=session, owner=owner, conversation_id=conversation_id, position=cut.position)


def undo_turn(*, session: Session, owner: str, conversation_id: str, kept_user_texts: list[str], undone: str) -> int:
    """Undo of one user message: remove it and what follows from the store, if it is the stored one.

    `kept_user_texts` are the stored user texts the chat shows before the undone message (the same
    whether Gradio's own undo has already popped it or not). A message that was never saved (a
    refused one) has no stored counterpart at that place, so nothing is removed.
    """
    detail = repo.get_conversation(session=session, owner=owner, conversation_id=conversation_id)
    stored = [m for m in detail.messages if m.role == "user"]
    keep = len(kept_user_texts)
    if len(stored) <= keep or not same_turns(kept_user_texts, [m.content for m in stored[:keep]]):
        return 0
    if _norm(stored[keep].content) != _norm(undone):
        return 0
    return repo.truncate_after(session=session, owner=owner, conversation_id=conversation_id, position=stored[keep].position)
