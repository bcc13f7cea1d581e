"""Small builders shared by the storage tests."""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import Session

from storage import repository as repo
from storage.models import TurnIds


def chat(session: Session, owner: str, turns: list[tuple[str, str]], **metrics: Any) -> tuple[uuid.UUID, list[TurnIds]]:
    """A conversation with these (prompt, reply) turns, every reply finished with "stop"."""
    conversation = repo.create_conversation(session=session, owner=owner)
    ids = [add_turn(session, owner, conversation.id, prompt, reply, **metrics) for prompt, reply in turns]
    return conversation.id, ids


def add_turn(session: Session, owner: str, conversation_id: uuid.UUID, prompt: str, reply: str, **metrics: Any) -> TurnIds:
    provider = metrics.pop("provider", "demo")
    model = metrics.pop("model", "echo")
    finish_reason = metrics.pop("finish_reason", "stop")
    ids = repo.begin_turn(
        session=session, owner=owner, conversation_id=conversation_id, content=prompt, provider=provider, model=model
    )
    repo.finish_turn(
        session=session, owner=owner, message_id=ids.assistant_message_id, content=reply,
        finish_reason=finish_reason, **metrics,
    )  # fmt: skip
    return ids
