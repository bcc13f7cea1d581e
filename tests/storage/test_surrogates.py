"""Lone surrogates (JSON "\\ud800") in titles, prompts and system prompts are stored as U+FFFD, never refused raw."""

from __future__ import annotations

from storage import repository as repo
from tests.storage.helpers import add_turn


def test_rename_with_a_lone_surrogate_stores_a_replacement_character(session):
    conversation = repo.create_conversation(session=session, owner="alice", title="Keep")
    renamed = repo.rename_conversation(session=session, owner="alice", conversation_id=conversation.id, title="Trip \ud800 2025")
    assert renamed.title == "Trip \ufffd 2025"
    assert repo.list_conversations(session=session, owner="alice")[0].title == "Trip \ufffd 2025"


def test_prompt_and_system_prompt_with_lone_surrogates_are_stored(session):
    conversation = repo.create_conversation(session=session, owner="alice", system_prompt="be \udfff brief")
    add_turn(session, "alice", conversation.id, "first \ud83d prompt", "ok")
    detail = repo.get_conversation(session=session, owner="alice", conversation_id=conversation.id)
    assert detail.conversation.system_prompt == "be \ufffd brief"
    assert detail.conversation.title == "first \ufffd prompt"
    assert [m.content for m in detail.messages] == ["first \ufffd prompt", "ok"]
