"""Owner isolation: every function, given another owner's ids, acts exactly as for unknown ids."""

from __future__ import annotations

import json
import uuid

import pytest

from storage import repository as repo
from storage.errors import NotFound
from tests.storage.helpers import chat

# Each call is made as "mallory" with alice's ids (c: conversation, m: assistant message, u: user message).
WRITES_AND_READS = {
    "get_conversation": lambda s, ids: repo.get_conversation(session=s, owner="mallory", conversation_id=ids["c"]),
    "rename_conversation": lambda s, ids: repo.rename_conversation(session=s, owner="mallory", conversation_id=ids["c"], title="pwned"),
    "set_pinned": lambda s, ids: repo.set_pinned(session=s, owner="mallory", conversation_id=ids["c"], pinned=True),
    "set_archived": lambda s, ids: repo.set_archived(session=s, owner="mallory", conversation_id=ids["c"], archived=True),
    "delete_conversation": lambda s, ids: repo.delete_conversation(session=s, owner="mallory", conversation_id=ids["c"]),
    "begin_turn": lambda s, ids: repo.begin_turn(session=s, owner="mallory", conversation_id=ids["c"], content="pwned"),
    "begin_reply": lambda s, ids: repo.begin_reply(session=s, owner="mallory", conversation_id=ids["c"]),
    "finish_turn": lambda s, ids: repo.finish_turn(session=s, owner="mallory", message_id=ids["p"], content="pwned", finish_reason="stop"),
    "truncate_after": lambda s, ids: repo.truncate_after(session=s, owner="mallory", conversation_id=ids["c"], position=0),
    "set_feedback": lambda s, ids: repo.set_feedback(session=s, owner="mallory", message_id=ids["m"], feedback="dislike"),
    "export_json": lambda s, ids: repo.export_json(session=s, owner="mallory", conversation_id=ids["c"]),
    "export_markdown": lambda s, ids: repo.export_markdown(session=s, owner="mallory", conversation_id=ids["c"]),
}


def _alice(session):
    conversation, turns = chat(session, "alice", [("secret plans", "the plans")])
    pending = repo.begin_turn(session=session, owner="alice", conversation_id=conversation, content="more plans")
    ids = {"c": conversation, "m": turns[0].assistant_message_id, "u": turns[0].user_message_id, "p": pending.assistant_message_id}
    snapshot = repo.export_json(session=session, owner="alice")
    return ids, snapshot


def _without_time(export: str) -> dict:
    document = json.loads(export)
    document.pop("exported_at")
    return document


@pytest.mark.parametrize("name", sorted(WRITES_AND_READS))
def test_other_owner_gets_not_found_and_changes_nothing(session, name):
    ids, before = _alice(session)
    call = WRITES_AND_READS[name]
    with pytest.raises(NotFound) as foreign:
        call(session, ids)
    # The message is the same as for an id that never existed.
    unknown = {k: uuid.uuid4() for k in ids}
    with pytest.raises(NotFound) as missing:
        call(session, unknown)
    assert type(foreign.value) is type(missing.value)
    assert str(foreign.value).split("'")[0] == str(missing.value).split("'")[0]  # same wording
    assert "plans" not in str(foreign.value)
    assert _without_time(repo.export_json(session=session, owner="alice")) == _without_time(before)


def test_other_owner_sees_nothing_in_lists_search_stats_and_exports(session):
    _alice(session)
    assert repo.list_conversations(session=session, owner="mallory", archived=None) == []
    assert repo.search_messages(session=session, owner="mallory", query="plans") == []
    assert repo.usage_stats(session=session, owner="mallory") == []
    assert json.loads(repo.export_json(session=session, owner="mallory"))["conversations"] == []
    assert "plans" not in repo.export_markdown(session=session, owner="mallory")
    # ...while alice sees her own.
    assert len(repo.search_messages(session=session, owner="alice", query="plans")) == 3
    assert repo.usage_stats(session=session, owner="alice")[0].count == 1


def test_owner_prefixes_do_not_leak(session):
    """Owners that share a prefix or differ by case are different owners (search included)."""
    chat(session, "alice", [("needle one", "x")])
    chat(session, "Alice", [("needle two", "x")])
    chat(session, "alice2", [("needle three", "x")])
    for owner, word in (("alice", "one"), ("Alice", "two"), ("alice2", "three")):
        hits = repo.search_messages(session=session, owner=owner, query="needle")
        assert len(hits) == 1 and word in hits[0].snippet
        assert len(repo.list_conversations(session=session, owner=owner)) == 1


def test_import_belongs_to_the_importer(session):
    ids, exported = _alice(session)
    new_ids = repo.import_json(session=session, owner="mallory", data=exported)
    assert ids["c"] not in new_ids
    assert [c.id for c in repo.list_conversations(session=session, owner="mallory")] == new_ids
    assert len(repo.list_conversations(session=session, owner="alice")) == 1
    with pytest.raises(NotFound):
        repo.get_conversation(session=session, owner="alice", conversation_id=new_ids[0])
