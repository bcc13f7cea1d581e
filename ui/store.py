"""Storage steps the chat handler runs together in one worker-thread call."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from storage import repository as repo
from storage.errors import NotFound
from storage.models import TurnIds


def start_turn(
    *,
    session: Session,
    owner: str,
    conversation_id: str | None,
    keep_user_turns: int,
    content: str,
    provider: str,
    model: str,
    system_prompt: str,
    params: dict[str, Any],
) -> TurnIds:
    """Save the user message and a pending reply, first making the store agree with the chat.

    A new conversation is created when none is open (or the open one was deleted). When the
    chat shows fewer user turns than are stored (Retry, Undo, Edit), the stored turns after
    them are removed first, so what is saved is always what the user sees.
    """
    if conversation_id:
        try:
            detail = repo.get_conversation(session=session, owner=owner, conversation_id=conversation_id)
        except NotFound:
            conversation_id = None
        else:
            users = [m.position for m in detail.messages if m.role == "user"]
            if len(users) > keep_user_turns:
                repo.truncate_after(session=session, owner=owner, conversation_id=conversation_id, position=users[keep_user_turns])
    if not conversation_id:
        conv = repo.create_conversation(
            session=session, owner=owner, first_prompt=content,
            model=f"{provider}:{model}", system_prompt=system_prompt or None, params=params,
        )
        conversation_id = str(conv.id)
    return repo.begin_turn(
        session=session, owner=owner, conversation_id=conversation_id, content=content,
        provider=provider, model=model, params=params, system_prompt=system_prompt or None,
    )
