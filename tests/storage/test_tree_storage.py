"""Conversations as message trees in storage (issue 15): versions, the current path, switching,
Undo's leaf, deleting a branch, forking, owner and id checks, and the migration of linear chats."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy import text
from sqlmodel import Session

from storage import db
from storage import repository as repo
from storage.attachments import AttachmentIn
from storage.errors import InvalidInput, NotFound
from storage.models import Conversation, Message, TurnIds, table_of
from tests.storage.helpers import chat
from tests.storage.test_blind_secrecy import blind_run

OWNER = "alice"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def reply(session: Session, cid: uuid.UUID, parent: object, text: str) -> TurnIds:
    ids = repo.begin_reply(session=session, owner=OWNER, conversation_id=cid, provider="demo", model="echo", parent_id=parent)
    repo.finish_turn(session=session, owner=OWNER, message_id=ids.assistant_message_id, content=text, finish_reason="stop")
    return ids


def turn(session: Session, cid: uuid.UUID, prompt: str, answer: str, parent: object = repo.AT_LEAF, **kw: object) -> TurnIds:
    ids = repo.begin_turn(session=session, owner=OWNER, conversation_id=cid, content=prompt, provider="demo",
                          model="echo", parent_id=parent, **kw)  # fmt: skip
    repo.finish_turn(session=session, owner=OWNER, message_id=ids.assistant_message_id, content=answer, finish_reason="stop")
    return ids


def texts(detail) -> list[str]:
    return [m.content for m in detail.messages]


def opened(session: Session, cid: uuid.UUID):
    return repo.get_conversation(session=session, owner=OWNER, conversation_id=cid)


def snapshot(engine) -> list[tuple]:
    """Every message and conversation row that a refused call must leave alone."""
    with engine.connect() as connection:
        messages = connection.execute(text("SELECT id, parent_id, position, content FROM message ORDER BY id")).all()
        conversations = connection.execute(text("SELECT id, current_leaf_id, title FROM conversation ORDER BY id")).all()
    return [*messages, *conversations]


def test_retry_and_edit_make_versions_and_the_newest_reply_is_the_leaf(session):
    cid, (t1, t2) = chat(session, OWNER, [("q1", "a1"), ("q2", "a2")])
    assert opened(session, cid).versions == {} and opened(session, cid).current_leaf_id == t2.assistant_message_id
    # Retry the second reply twice: siblings under q2, the newest shown.
    r2 = reply(session, cid, t2.user_message_id, "a2 again")
    r3 = reply(session, cid, t2.user_message_id, "a2 third")
    assert r2.parent_id == t2.user_message_id and r2.user_message_id is None
    detail = opened(session, cid)
    assert texts(detail) == ["q1", "a1", "q2", "a2 third"]
    assert detail.current_leaf_id == r3.assistant_message_id
    assert detail.versions == {r3.assistant_message_id: [t2.assistant_message_id, r2.assistant_message_id, r3.assistant_message_id]}
    assert detail.other_messages == 2
    assert [m.parent_id for m in detail.messages] == [None, t1.user_message_id, t1.assistant_message_id, t2.user_message_id]
    # Edit q2: a sibling user message under a1, with its own reply.
    edit = turn(session, cid, "q2 edited", "a2 edited", parent=t1.assistant_message_id)
    assert edit.parent_id == t1.assistant_message_id
    detail = opened(session, cid)
    assert texts(detail) == ["q1", "a1", "q2 edited", "a2 edited"]
    assert detail.versions == {edit.user_message_id: [t2.user_message_id, edit.user_message_id]}
    assert detail.other_messages == 4
    # Edit the first message: a second root, in the same conversation; the title stays the first prompt's.
    root = turn(session, cid, "q1 edited", "a1 edited", parent=None)
    detail = opened(session, cid)
    assert root.parent_id is None and texts(detail) == ["q1 edited", "a1 edited"]
    assert detail.versions == {root.user_message_id: [t1.user_message_id, root.user_message_id]}
    assert detail.conversation.title == "q1"
    # AT_LEAF continues the shown path; positions stay creation order.
    nxt = turn(session, cid, "q3", "a3")
    assert nxt.parent_id == root.assistant_message_id
    assert texts(opened(session, cid))[-2:] == ["q3", "a3"]
    assert len(repo.tree_of(session, OWNER, [cid])[cid]) == 12


def test_switch_shows_the_newest_leaf_of_a_branch(session):
    cid, (t1, t2) = chat(session, OWNER, [("q1", "a1"), ("q2", "a2")])
    edit = turn(session, cid, "q2 edited", "a2 edited", parent=t1.assistant_message_id)
    later = turn(session, cid, "q3 on edit", "a3 on edit")
    # Back to the first q2: its branch ends at a2 (the only leaf below it).
    detail = repo.switch_branch(session=session, owner=OWNER, conversation_id=cid, message_id=t2.user_message_id)
    assert texts(detail) == ["q1", "a1", "q2", "a2"] and detail.current_leaf_id == t2.assistant_message_id
    assert opened(session, cid).current_leaf_id == t2.assistant_message_id  # stored, not only returned
    # To the edited branch by its user message: the newest message below it, two turns down.
    detail = repo.switch_branch(session=session, owner=OWNER, conversation_id=cid, message_id=edit.user_message_id)
    assert texts(detail) == ["q1", "a1", "q2 edited", "a2 edited", "q3 on edit", "a3 on edit"]
    assert detail.current_leaf_id == later.assistant_message_id
    # A switch to a message on the path shows its newest leaf too (here: the same path).
    assert texts(repo.switch_branch(session=session, owner=OWNER, conversation_id=cid, message_id=t1.user_message_id)) == texts(detail)


def test_set_leaf_undoes_without_deleting_and_the_empty_path(session, count_rows):
    cid, (t1, t2) = chat(session, OWNER, [("q1", "a1"), ("q2", "a2")])
    detail = repo.set_leaf(session=session, owner=OWNER, conversation_id=cid, message_id=t1.assistant_message_id)
    assert texts(detail) == ["q1", "a1"] and detail.other_messages == 2 and count_rows() == (1, 4)
    # A new turn goes under the leaf: a sibling of q2.
    t3 = turn(session, cid, "q2b", "a2b")
    assert t3.parent_id == t1.assistant_message_id
    assert opened(session, cid).versions == {t3.user_message_id: [t2.user_message_id, t3.user_message_id]}
    # Undo of the first turn: nothing shown, nothing deleted; None and EMPTY_PATH say the same.
    for empty in (None, repo.EMPTY_PATH):
        detail = repo.set_leaf(session=session, owner=OWNER, conversation_id=cid, message_id=empty)
        assert detail.messages == [] and detail.current_leaf_id is None and detail.other_messages == 6
        assert opened(session, cid).messages == []
    with pytest.raises(InvalidInput, match="user message"):  # nothing to answer on an empty path
        repo.begin_reply(session=session, owner=OWNER, conversation_id=cid, provider="demo", model="echo")
    root = turn(session, cid, "fresh start", "ok")
    assert root.parent_id is None and texts(opened(session, cid)) == ["fresh start", "ok"]
    assert count_rows() == (1, 8)


def test_a_reply_answers_only_a_user_message(session, engine):
    cid, (t1,) = chat(session, OWNER, [("q1", "a1")])
    before = snapshot(engine)
    for parent in (repo.AT_LEAF, t1.assistant_message_id, None):  # the leaf is a reply; None is no message
        with pytest.raises(InvalidInput):
            repo.begin_reply(session=session, owner=OWNER, conversation_id=cid, provider="demo", model="echo", parent_id=parent)
    assert snapshot(engine) == before


def test_a_forgotten_or_stale_leaf_falls_back_to_the_newest_message(session, engine):
    """NULL (a writer that does not know the tree) and a leaf that is gone both mean the newest message."""
    for stale in (None, uuid.uuid4()):
        cid, (_, t2) = chat(session, OWNER, [("q1", "a1"), ("q2", "a2")])
        with engine.begin() as connection:
            conversations = table_of(Conversation)
            connection.execute(sa.update(conversations).where(conversations.c.id == cid).values(current_leaf_id=stale))
        detail = opened(session, cid)
        assert detail.current_leaf_id == t2.assistant_message_id and texts(detail) == ["q1", "a1", "q2", "a2"]
        assert turn(session, cid, "q3", "a3").parent_id == t2.assistant_message_id


def test_delete_branch_takes_descendants_and_their_own_files_and_moves_the_leaf(session, engine):
    cid, (t1, t2) = chat(session, OWNER, [("q1", "a1"), ("q2", "a2")])
    shared = AttachmentIn(name="kept.png", mime="image/png", data=PNG)
    own = AttachmentIn(name="gone.txt", mime="text/plain", data=b"only here zebra", text="only here zebra")
    kept = turn(session, cid, "q2 with files zebra", "a2 files", parent=t1.assistant_message_id, attachments=[shared, own])
    turn(session, cid, "q3 deeper zebra", "a3 deeper")
    other, _ = chat(session, OWNER, [("elsewhere", "x")])
    turn(session, other, "same png", "ok", attachments=[shared])  # the PNG is linked from another chat too
    assert len(repo.search_messages(session=session, owner=OWNER, query="zebra")) == 2
    # The leaf is inside the branch: it moves to the newest leaf of the remaining sibling (q2's a2).
    assert repo.delete_branch(session=session, owner=OWNER, message_id=kept.user_message_id) == 4
    detail = opened(session, cid)
    assert texts(detail) == ["q1", "a1", "q2", "a2"] and detail.current_leaf_id == t2.assistant_message_id
    assert detail.versions == {} and detail.other_messages == 0
    assert repo.search_messages(session=session, owner=OWNER, query="zebra") == []  # full-text rows went too
    with engine.connect() as connection:
        names = connection.execute(text("SELECT mime FROM attachment")).scalars().all()
    assert names == ["image/png"]  # the text file only that branch carried is gone; the shared PNG stays
    # No sibling left: the leaf moves to the parent; the last root: the path becomes empty.
    assert repo.delete_branch(session=session, owner=OWNER, message_id=t2.assistant_message_id) == 1
    assert opened(session, cid).current_leaf_id == t2.user_message_id
    assert repo.delete_branch(session=session, owner=OWNER, message_id=t1.user_message_id) == 3
    detail = opened(session, cid)
    assert detail.messages == [] and detail.current_leaf_id is None and detail.other_messages == 0
    # A leaf outside the branch stays where it was.
    cid, (t1, t2) = chat(session, OWNER, [("q1", "a1"), ("q2", "a2")])
    side = reply(session, cid, t1.user_message_id, "a1 again")
    repo.switch_branch(session=session, owner=OWNER, conversation_id=cid, message_id=t2.assistant_message_id)
    assert repo.delete_branch(session=session, owner=OWNER, message_id=side.assistant_message_id) == 1
    assert opened(session, cid).current_leaf_id == t2.assistant_message_id
    if engine.dialect.name == "sqlite":
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO message_fts(message_fts) VALUES ('integrity-check')"))


def test_long_chains_can_be_deleted(session, engine):
    """Parent links without ON DELETE CASCADE: SQLite's cascade recursion stopped at 1,000 generations."""

    def chain(length: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
        cid = repo.create_conversation(session=session, owner=OWNER).id
        ids = [uuid.uuid4() for _ in range(length)]
        session.execute(sa.insert(table_of(Message)), [
            dict(id=mid, conversation_id=cid, owner=OWNER, position=i, role="user", content=f"m{i}",
                 parent_id=ids[i - 1] if i else None, attachment_count=0) for i, mid in enumerate(ids)
        ])  # fmt: skip
        session.commit()
        return cid, ids

    cid, _ = chain(1_200)
    assert len(opened(session, cid).messages) == 1_200
    repo.delete_conversation(session=session, owner=OWNER, conversation_id=cid)
    cid, ids = chain(1_200)
    assert repo.truncate_after(session=session, owner=OWNER, conversation_id=cid, position=100) == 1_100
    cid, ids = chain(1_200)
    assert repo.delete_branch(session=session, owner=OWNER, message_id=ids[50]) == 1_150
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM message")).scalar_one() == 150


def test_fork_copies_the_path_with_files_metrics_and_feedback(session, count_rows):
    cid, (t1, t2) = chat(session, OWNER, [("q1", "a1"), ("q2", "a2")], ttft_ms=12, input_tokens=7, output_tokens=3)
    repo.rename_conversation(session=session, owner=OWNER, conversation_id=cid, title="Trip " + "x" * 195)
    files = turn(session, cid, "with a file", "seen", parent=t1.assistant_message_id,
                 attachments=[AttachmentIn(name="p.png", mime="image/png", data=PNG)])  # fmt: skip
    repo.set_feedback(session=session, owner=OWNER, message_id=files.assistant_message_id, feedback="like")
    turn(session, cid, "after fork point", "not copied")
    source = opened(session, cid)
    copy = repo.fork_conversation(session=session, owner=OWNER, message_id=files.assistant_message_id)
    assert copy.id != cid and len(copy.title) == 200 and copy.title.endswith("… (branch)")
    assert (copy.model, copy.system_prompt, copy.params) == (source.conversation.model, source.conversation.system_prompt, source.conversation.params)
    forked = opened(session, copy.id)
    assert texts(forked) == ["q1", "a1", "with a file", "seen"] and forked.versions == {} and forked.other_messages == 0
    assert [m.position for m in forked.messages] == [0, 1, 2, 3]
    assert [m.parent_id for m in forked.messages] == [None, *[m.id for m in forked.messages[:-1]]]
    assert forked.current_leaf_id == forked.messages[-1].id
    assert not {m.id for m in forked.messages} & {m.id for m in repo.tree_of(session, OWNER, [cid])[cid]}
    assert (forked.messages[1].ttft_ms, forked.messages[1].input_tokens, forked.messages[1].output_tokens) == (12, 7, 3)
    assert forked.messages[3].feedback == "like"
    assert [a.name for a in forked.messages[2].attachments] == ["p.png"]
    assert forked.messages[2].attachments[0].id == files.attachment_ids[0]  # the same stored file, linked again
    # The copy is independent: deleting the source keeps the copy and its file.
    repo.delete_conversation(session=session, owner=OWNER, conversation_id=cid)
    assert repo.get_attachment(session=session, owner=OWNER, attachment_id=files.attachment_ids[0]).data == PNG
    assert count_rows() == (1, 4)
    titled = repo.fork_conversation(session=session, owner=OWNER, message_id=forked.messages[0].id, title="Just q1")
    assert titled.title == "Just q1" and texts(opened(session, titled.id)) == ["q1"]


def test_fork_of_a_streaming_reply_copies_it_as_interrupted(session):
    cid = repo.create_conversation(session=session, owner=OWNER).id
    ids = repo.begin_turn(session=session, owner=OWNER, conversation_id=cid, content="q", provider="demo", model="echo")
    copy = repo.fork_conversation(session=session, owner=OWNER, message_id=ids.assistant_message_id)
    assert [m.finish_reason for m in opened(session, copy.id).messages] == [None, "interrupted"]
    assert opened(session, cid).messages[-1].finish_reason == "pending"


def test_an_unvoted_blind_pane_cannot_be_forked_or_branched(session, engine):
    ids = blind_run(session)
    pane = ids.panes[0]
    before = snapshot(engine)
    for call in (
        lambda: repo.fork_conversation(session=session, owner="alice", message_id=pane.assistant_message_id),
        lambda: repo.delete_branch(session=session, owner="alice", message_id=pane.assistant_message_id),
        lambda: repo.switch_branch(session=session, owner="alice", conversation_id=pane.conversation_id, message_id=pane.assistant_message_id),
        lambda: repo.set_leaf(session=session, owner="alice", conversation_id=pane.conversation_id, message_id=None),
    ):
        with pytest.raises(NotFound):
            call()
    assert snapshot(engine) == before
    # After the vote a pane forks into an ordinary chat.
    repo.vote_comparison(session=session, owner="alice", comparison_id=ids.comparison_id, verdict="tie")
    copy = repo.fork_conversation(session=session, owner="alice", message_id=pane.assistant_message_id)
    assert [m.role for m in opened(session, copy.id).messages] == ["user", "assistant"]
    assert copy.id in {c.id for c in repo.list_conversations(session=session, owner="alice")}


def test_other_owners_and_bad_ids_are_refused_and_change_nothing(session, engine):
    cid, (t1, t2) = chat(session, OWNER, [("q1", "a1"), ("q2", "a2")])
    other, (o1,) = chat(session, OWNER, [("other chat", "x")])
    bob, (b1,) = chat(session, "bob", [("bob's", "y")])
    before = snapshot(engine)
    not_found = [  # another owner's ids behave like unknown ones
        lambda: repo.switch_branch(session=session, owner="bob", conversation_id=cid, message_id=t1.user_message_id),
        lambda: repo.switch_branch(session=session, owner=OWNER, conversation_id=cid, message_id=b1.user_message_id),
        lambda: repo.set_leaf(session=session, owner=OWNER, conversation_id=cid, message_id=b1.assistant_message_id),
        lambda: repo.set_leaf(session=session, owner=OWNER, conversation_id=cid, message_id=uuid.uuid4()),
        lambda: repo.delete_branch(session=session, owner="bob", message_id=t2.user_message_id),
        lambda: repo.fork_conversation(session=session, owner="bob", message_id=t2.user_message_id),
        lambda: repo.begin_turn(session=session, owner=OWNER, conversation_id=cid, content="hi", parent_id=b1.assistant_message_id),
        lambda: repo.begin_reply(session=session, owner=OWNER, conversation_id=cid, parent_id=b1.user_message_id),
        lambda: repo.begin_turn(session=session, owner="bob", conversation_id=cid, content="hi", parent_id=t1.assistant_message_id),
    ]
    for call in not_found:
        with pytest.raises(NotFound):
            call()
    # Malformed ids are simply not found (storage's rule, storage.validation.parse_id); a message of
    # another conversation of the same owner is refused as such; each message names what was wrong.
    refused = [
        (NotFound, "No message with id 'nope'", lambda: repo.switch_branch(session=session, owner=OWNER, conversation_id=cid, message_id="nope")),
        (NotFound, "No message with id '12'", lambda: repo.delete_branch(session=session, owner=OWNER, message_id="12")),
        (NotFound, "No message with id None", lambda: repo.fork_conversation(session=session, owner=OWNER, message_id=None)),
        (NotFound, "No parent message with id 'leaves'",
         lambda: repo.begin_turn(session=session, owner=OWNER, conversation_id=cid, content="hi", parent_id="leaves")),
        (InvalidInput, "not in this conversation",
         lambda: repo.switch_branch(session=session, owner=OWNER, conversation_id=cid, message_id=o1.user_message_id)),
        (InvalidInput, "not in this conversation",
         lambda: repo.set_leaf(session=session, owner=OWNER, conversation_id=cid, message_id=o1.assistant_message_id)),
        (InvalidInput, "not in this conversation",
         lambda: repo.begin_turn(session=session, owner=OWNER, conversation_id=cid, content="hi", parent_id=o1.assistant_message_id)),
        (InvalidInput, "title cannot be empty",
         lambda: repo.fork_conversation(session=session, owner=OWNER, message_id=t1.user_message_id, title="  ")),
    ]
    for error, message, call in refused:
        with pytest.raises(error, match=message):
            call()
    assert snapshot(engine) == before


# --- migration from revision 0007 -----------------------------------------------------------------


def test_migration_turns_linear_chats_into_one_branch_trees(empty_engine):
    db.migrate(empty_engine, "0007")
    sqlite = empty_engine.dialect.name == "sqlite"
    as_id = (lambda u: u.hex) if sqlite else str
    when = "2025-03-01 09:00:00.000000" if sqlite else "2025-03-01 09:00:00+00"
    chats = {uuid.uuid4(): [uuid.uuid4() for _ in range(n)] for n in (5, 1, 0)}
    with empty_engine.begin() as connection:
        for cid, messages in chats.items():
            connection.execute(text(
                "INSERT INTO conversation (id, owner, kind, title, pinned, archived, created_at, updated_at) "
                "VALUES (:id, 'alice', 'chat', 'Old', :f, :f, :when, :when)"), {"id": as_id(cid), "f": False, "when": when})  # fmt: skip
            # Positions with a gap (an old Retry deleted one) and inserted out of order.
            for index, mid in reversed(list(enumerate(messages))):
                connection.execute(text(
                    "INSERT INTO message (id, conversation_id, owner, position, role, content, created_at, attachment_count) "
                    "VALUES (:id, :c, 'alice', :p, :r, :t, :when, 0)"),
                    {"id": as_id(mid), "c": as_id(cid), "p": index * 2, "r": "user" if index % 2 == 0 else "assistant",
                     "t": f"old wombat {index}", "when": when})  # fmt: skip

    db.init_db(empty_engine)

    (long, longs), (short, shorts), (empty, _) = chats.items()
    with Session(empty_engine) as session:
        detail = repo.get_conversation(session=session, owner="alice", conversation_id=long)
        assert [m.id for m in detail.messages] == longs
        assert [m.parent_id for m in detail.messages] == [None, *longs[:-1]]
        assert detail.current_leaf_id == longs[-1] and detail.versions == {} and detail.other_messages == 0
        assert [m.id for m in repo.get_conversation(session=session, owner="alice", conversation_id=short).messages] == shorts
        assert repo.get_conversation(session=session, owner="alice", conversation_id=empty).messages == []
        # Search still works (the full-text triggers and index survived), for old rows and new ones.
        assert len(repo.search_messages(session=session, owner="alice", query="wombat")) == 6
        ids = repo.begin_turn(session=session, owner="alice", conversation_id=long, content="new numbat")
        assert ids.parent_id == longs[-1]
        assert len(repo.search_messages(session=session, owner="alice", query="numbat")) == 1
        assert repo.delete_branch(session=session, owner="alice", message_id=longs[3]) == 4
        assert len(repo.search_messages(session=session, owner="alice", query="wombat")) == 4
    with empty_engine.connect() as connection:
        leaves = dict(connection.execute(text("SELECT id, current_leaf_id FROM conversation")).tuples().all())
        assert connection.execute(text("SELECT whole_tree FROM share_link")).all() == []
        if sqlite:
            triggers = connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'")).scalars().all()
            assert sorted(triggers) == ["message_fts_delete", "message_fts_insert", "message_fts_update"]
            connection.execute(text("INSERT INTO message_fts(message_fts) VALUES ('integrity-check')"))
    normalise = (lambda v: uuid.UUID(v) if isinstance(v, str) and v else v)
    assert {normalise(k): normalise(v) for k, v in leaves.items()}[short] == shorts[-1]
    assert {normalise(k): normalise(v) for k, v in leaves.items()}[empty] is None


def test_downgrade_to_0007_and_up_again_keeps_messages(empty_engine):
    from alembic import command

    db.init_db(empty_engine)
    with Session(empty_engine) as session:
        cid, (t1, t2) = chat(session, "alice", [("q1 yak", "a1"), ("q2", "a2")])
    config = db.alembic_config()
    with empty_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0007")
    db.init_db(empty_engine)
    with Session(empty_engine) as session:
        assert texts(repo.get_conversation(session=session, owner="alice", conversation_id=cid)) == ["q1 yak", "a1", "q2", "a2"]
        assert len(repo.search_messages(session=session, owner="alice", query="yak")) == 1
