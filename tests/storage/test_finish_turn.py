"""finish_turn writes the reply in one guarded UPDATE ... RETURNING; what it refuses it refuses with its reason."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from storage import repository as repo
from storage.errors import InvalidInput, NotFound
from storage.models import Conversation, Message, table_of


def _pending(session):
    conversation = repo.create_conversation(session=session, owner="alice").id
    ids = repo.begin_turn(session=session, owner="alice", conversation_id=conversation, content="a question", provider="demo", model="echo")
    return conversation, ids


def _content(session, message_id):
    messages = table_of(Message)
    return session.execute(sa.select(messages.c.content, messages.c.finish_reason).where(messages.c.id == message_id)).one()


def test_the_reply_and_its_metrics_are_written_and_returned(session):
    conversation, ids = _pending(session)
    table = table_of(Conversation)
    before = session.execute(sa.select(table.c.updated_at).where(table.c.id == conversation)).scalar_one()
    public = repo.finish_turn(session=session, owner="alice", message_id=ids.assistant_message_id, content="the answer",
                              finish_reason="stop", input_tokens=12, output_tokens=34, ttft_ms=56, model="echo-2")
    assert (public.id, public.content, public.finish_reason, public.role) == (ids.assistant_message_id, "the answer", "stop", "assistant")
    assert (public.input_tokens, public.output_tokens, public.ttft_ms, public.model, public.provider) == (12, 34, 56, "echo-2", "demo")
    assert public.conversation_id == conversation and public.parent_id == ids.user_message_id and public.attachments == []
    assert tuple(_content(session, ids.assistant_message_id)) == ("the answer", "stop")
    after = session.execute(sa.select(table.c.updated_at).where(table.c.id == conversation)).scalar_one()
    assert after >= before


def test_a_finished_reply_is_not_finished_again(session):
    _, ids = _pending(session)
    repo.finish_turn(session=session, owner="alice", message_id=ids.assistant_message_id, content="first", finish_reason="stop")
    with pytest.raises(InvalidInput, match="already finished"):
        repo.finish_turn(session=session, owner="alice", message_id=ids.assistant_message_id, content="second", finish_reason="stop")
    assert tuple(_content(session, ids.assistant_message_id)) == ("first", "stop")


def test_a_user_message_is_not_a_reply(session):
    _, ids = _pending(session)
    with pytest.raises(InvalidInput, match="Only an assistant reply"):
        repo.finish_turn(session=session, owner="alice", message_id=ids.user_message_id, content="x", finish_reason="stop")
    assert tuple(_content(session, ids.user_message_id)) == ("a question", None)


def test_another_owners_reply_is_not_found_and_unchanged(session):
    _, ids = _pending(session)
    with pytest.raises(NotFound):
        repo.finish_turn(session=session, owner="mallory", message_id=ids.assistant_message_id, content="pwned", finish_reason="stop")
    assert tuple(_content(session, ids.assistant_message_id)) == ("", "pending")


def test_an_interrupted_reply_can_still_be_finished(session):
    _, ids = _pending(session)
    messages = table_of(Message)
    session.execute(sa.update(messages).where(messages.c.id == ids.assistant_message_id).values(finish_reason="interrupted"))
    session.commit()
    public = repo.finish_turn(session=session, owner="alice", message_id=ids.assistant_message_id, content="late", finish_reason="stop")
    assert (public.content, public.finish_reason) == ("late", "stop")
