"""storage.tree.get_path_user_messages: the user messages of the current path, as get_path shows them (the
lighter read a new turn checks the chat against), on a linear chat, on branches, and for nobody else."""

from __future__ import annotations

import uuid

import pytest

from storage import repository as repo
from storage.errors import NotFound
from storage.tree import get_path_user_messages
from tests.storage.helpers import chat
from tests.storage.test_blind_secrecy import blind_run
from tests.storage.test_tree_storage import OWNER, reply, turn


def users_shown(session, cid) -> list:
    return [m for m in repo.get_conversation(session=session, owner=OWNER, conversation_id=cid).messages if m.role == "user"]


def test_the_user_messages_of_the_path_are_get_paths_whatever_the_branches(session):
    cid, (t1, t2) = chat(session, OWNER, [("q1", "a1"), ("q2", "a2")])
    light = get_path_user_messages(session=session, owner=OWNER, conversation_id=cid)
    assert [m.content for m in light] == ["q1", "q2"] and light == users_shown(session, cid)  # linear: no id list
    reply(session, cid, t2.user_message_id, "a2 again")  # a retry: versions of the reply only
    turn(session, cid, "q2 edited", "a2 edited", parent=t1.assistant_message_id)  # an edit: another q2
    light = get_path_user_messages(session=session, owner=OWNER, conversation_id=str(cid))
    assert [m.content for m in light] == ["q1", "q2 edited"] and light == users_shown(session, cid)
    repo.switch_branch(session=session, owner=OWNER, conversation_id=cid, message_id=t2.user_message_id)
    light = get_path_user_messages(session=session, owner=OWNER, conversation_id=cid)
    assert [m.content for m in light] == ["q1", "q2"] and light == users_shown(session, cid)
    repo.set_leaf(session=session, owner=OWNER, conversation_id=cid, message_id=None)  # Undo of the first turn
    assert get_path_user_messages(session=session, owner=OWNER, conversation_id=cid) == users_shown(session, cid) == []


def test_another_owners_an_unknown_or_an_unvoted_blind_conversation_is_not_found(session):
    cid, _ = chat(session, OWNER, [("q1", "a1")])
    for owner, conversation_id in [("mallory", cid), (OWNER, uuid.uuid4())]:
        with pytest.raises(NotFound):
            get_path_user_messages(session=session, owner=owner, conversation_id=conversation_id)
    pane = blind_run(session).panes[0]
    with pytest.raises(NotFound):
        get_path_user_messages(session=session, owner=OWNER, conversation_id=pane.conversation_id)
