"""Conversations as trees in the JSON and Markdown exports (SQLite and PostgreSQL).

The JSON export carries every message of the tree with `parent` (its parent's index in the list)
and the conversation's `current` leaf; importing it rebuilds the same tree with the same current
path. A file written before trees (no `parent` anywhere) imports as a chain, as it always did, and
a file whose indexes do not describe a tree is refused with nothing written. Markdown shows the
current path and says how many messages of other versions it leaves out.
"""

from __future__ import annotations

import json
import uuid

import pytest
from sqlalchemy import text

from storage import repository as repo
from storage.errors import InvalidInput
from tests.storage.helpers import chat
from tests.storage.test_attachments_storage import PNG, check, png

OWNER = "alice"


def branched(session, owner: str = OWNER) -> dict[str, uuid.UUID]:
    """A chat with a retried reply, an edited second question (with files on both versions) and an edited
    first question; its current path is q1 → "a1 second" → q2 → a2, five messages lie off it.

    Positions: q1 0, a1 1, a1b 2, q2 3, a2 4, q2b 5, a2b 6, r 7, ra 8.
    """
    cid = repo.create_conversation(session=session, owner=owner).id

    def reply(parent, content, **metrics):
        ids = repo.begin_reply(session=session, owner=owner, conversation_id=cid, provider="demo", model="echo",
                               parent_id=parent)
        repo.finish_turn(session=session, owner=owner, message_id=ids.assistant_message_id, content=content,
                         finish_reason="stop", **metrics)
        return ids.assistant_message_id

    def turn(parent, prompt, answer, files=(), **metrics):
        ids = repo.begin_turn(session=session, owner=owner, conversation_id=cid, content=prompt, provider="demo",
                              model="echo", parent_id=parent, attachments=list(files))
        repo.finish_turn(session=session, owner=owner, message_id=ids.assistant_message_id, content=answer,
                         finish_reason="stop", **metrics)
        return ids.user_message_id, ids.assistant_message_id

    q1, a1 = turn(None, "q1 first question", "a1 first answer")
    a1b = reply(q1, "a1 second answer", input_tokens=11, output_tokens=22, ttft_ms=33, duration_ms=44)
    repo.set_feedback(session=session, owner=owner, message_id=a1b, feedback="like")
    q2, a2 = turn(a1b, "q2 with a chart", "a2 about the chart", [png()], input_tokens=5, output_tokens=6)
    q2b, a2b = turn(a1b, "q2 edited, another chart", "a2 edited answer", [png("other.png", PNG + b"other")])
    r, ra = turn(None, "q1 edited from the start", "r answer")
    repo.switch_branch(session=session, owner=owner, conversation_id=cid, message_id=q2)
    return dict(cid=cid, q1=q1, a1=a1, a1b=a1b, q2=q2, a2=a2, q2b=q2b, a2b=a2b, r=r, ra=ra)


ORDER = ["q1", "a1", "a1b", "q2", "a2", "q2b", "a2b", "r", "ra"]
PARENTS = [None, 0, 0, 2, 3, 2, 5, None, 7]
PATH = ["q1 first question", "a1 second answer", "q2 with a chart", "a2 about the chart"]


def _shape(session, owner, cid):
    """Everything the tree holds that an import must keep, ids replaced by indexes."""
    tree = repo.tree_of(session, owner, [cid])[cid]
    index = {m.id: i for i, m in enumerate(tree)}
    keep = ("role", "content", "provider", "model", "finish_reason", "feedback", "input_tokens", "output_tokens",
            "ttft_ms", "duration_ms")
    return [
        ({k: getattr(m, k) for k in keep}, None if m.parent_id is None else index[m.parent_id],
         [(a.name, a.sha256, a.mime) for a in m.attachments])
        for m in tree
    ]  # fmt: skip


def test_the_tree_and_its_current_leaf_survive_export_and_import(session, count_rows):
    ids = branched(session)
    exported = repo.export_json(session=session, owner=OWNER, conversation_id=ids["cid"])
    (conversation,) = json.loads(exported)["conversations"]
    assert [m["parent"] for m in conversation["messages"]] == PARENTS
    assert [m["id"] for m in conversation["messages"]] == [str(ids[name]) for name in ORDER]
    assert conversation["current"] == ORDER.index("a2")

    (copy,) = repo.import_json(session=session, owner="bob", data=exported, check_attachment=check)
    assert count_rows() == (2, 18)
    assert _shape(session, "bob", copy) == _shape(session, OWNER, ids["cid"])
    detail = repo.get_conversation(session=session, owner="bob", conversation_id=copy)
    assert [m.content for m in detail.messages] == PATH
    assert detail.other_messages == 5
    assert [a.name for a in detail.messages[2].attachments] == ["chart.png"]
    assert detail.messages[1].feedback == "like" and detail.messages[1].ttft_ms == 33
    copied = {m.id for m in repo.tree_of(session, "bob", [copy])[copy]}
    assert detail.current_leaf_id in copied and copied.isdisjoint(ids.values())


def test_switching_after_import_reaches_the_other_versions(session):
    ids = branched(session)
    (copy,) = repo.import_json(session=session, owner="bob", check_attachment=check,
                               data=repo.export_json(session=session, owner=OWNER, conversation_id=ids["cid"]))
    tree = repo.tree_of(session, "bob", [copy])[copy]
    switched = repo.switch_branch(session=session, owner="bob", conversation_id=copy, message_id=tree[5].id)
    assert [m.content for m in switched.messages] == ["q1 first question", "a1 second answer",
                                                      "q2 edited, another chart", "a2 edited answer"]
    assert [a.name for a in switched.messages[2].attachments] == ["other.png"]


def _document(messages, current=None, **conversation):
    item = {"title": "t", "messages": messages, **conversation}
    if current is not None:
        item["current"] = current
    return json.dumps({"format": "parley.conversations", "version": 1, "conversations": [item]})


def _m(role, content, **extra):
    return {"role": role, "content": content, **extra}


def test_a_file_from_before_trees_imports_as_a_chain(session):
    old = _document([_m("user", "one"), _m("assistant", "two"), _m("user", "three"), _m("assistant", "four")])
    (cid,) = repo.import_json(session=session, owner="bob", data=old)
    detail = repo.get_conversation(session=session, owner="bob", conversation_id=cid)
    assert [m.content for m in detail.messages] == ["one", "two", "three", "four"]
    assert detail.other_messages == 0 and detail.versions == {}
    tree = repo.tree_of(session, "bob", [cid])[cid]
    assert [m.parent_id for m in tree] == [None, *[m.id for m in tree[:-1]]]
    assert [m.position for m in tree] == [0, 1, 2, 3]


def test_an_absent_parent_is_the_message_before_and_null_is_a_root(session):
    data = _document([_m("user", "a"), _m("assistant", "b"), _m("user", "c", parent=None), _m("assistant", "d")],
                     current=1)
    (cid,) = repo.import_json(session=session, owner="bob", data=data)
    tree = repo.tree_of(session, "bob", [cid])[cid]
    assert [m.parent_id for m in tree] == [None, tree[0].id, None, tree[2].id]
    detail = repo.get_conversation(session=session, owner="bob", conversation_id=cid)
    assert [m.content for m in detail.messages] == ["a", "b"] and detail.other_messages == 2


def test_an_empty_current_path_survives(session):
    cid, _ = chat(session, OWNER, [("only question", "only answer")])
    repo.set_leaf(session=session, owner=OWNER, conversation_id=cid, message_id=None)
    exported = repo.export_json(session=session, owner=OWNER, conversation_id=cid)
    assert json.loads(exported)["conversations"][0]["current"] == -1
    (copy,) = repo.import_json(session=session, owner="bob", data=exported)
    detail = repo.get_conversation(session=session, owner="bob", conversation_id=copy)
    assert detail.messages == [] and detail.other_messages == 2


BAD_TREES = {
    "parent is itself": ([_m("user", "a"), _m("assistant", "b", parent=1)], None, "message 2: its parent"),
    "parent comes later": ([_m("user", "a", parent=1), _m("assistant", "b")], None, "message 1: its parent"),
    "negative parent": ([_m("user", "a"), _m("assistant", "b", parent=-1)], None, "message 2"),
    "parent as text": ([_m("user", "a"), _m("assistant", "b", parent="0")], None, "parent"),
    "current out of range": ([_m("user", "a"), _m("assistant", "b")], 2, "current"),
    "current below -1": ([_m("user", "a")], -2, "current"),
    "current with no messages": ([], 0, "current"),
}


@pytest.mark.parametrize("case", sorted(BAD_TREES))
def test_indexes_that_are_not_a_tree_are_refused_and_nothing_is_written(session, count_rows, case):
    chat(session, OWNER, [("existing", "row")])
    before = count_rows()
    messages, current, words = BAD_TREES[case]
    good = {"title": "fine", "messages": [_m("user", "x")]}
    data = json.loads(_document(messages, current))
    data["conversations"].insert(0, good)  # a valid conversation first: still all or nothing
    with pytest.raises(InvalidInput) as error:
        repo.import_json(session=session, owner="bob", data=json.dumps(data))
    assert words in str(error.value) and str(error.value).startswith("This is not a valid Parley export")
    assert count_rows() == before
    assert repo.list_conversations(session=session, owner="bob", archived=None) == []


def test_markdown_shows_the_current_path_and_counts_the_other_versions(session):
    ids = branched(session)
    markdown = repo.export_markdown(session=session, owner=OWNER, conversation_id=ids["cid"])
    for shown in PATH:
        assert shown in markdown
    for hidden in ("a1 first answer", "q2 edited", "a2 edited answer", "q1 edited from the start", "r answer"):
        assert hidden not in markdown
    assert "5 messages of other versions" in markdown and "JSON export" in markdown
    linear, _ = chat(session, OWNER, [("plain", "chat")])
    assert "other versions" not in repo.export_markdown(session=session, owner=OWNER, conversation_id=linear)
    everything = repo.export_markdown(session=session, owner=OWNER)
    assert everything.count("other versions") == 1 and "a1 first answer" not in everything


def test_export_of_every_chat_reads_the_trees_in_few_queries(session, engine):
    for _ in range(3):
        branched(session)
    statements: list[str] = []
    from sqlalchemy import event

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        document = json.loads(repo.export_json(session=session, owner=OWNER))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [len(c["messages"]) for c in document["conversations"]] == [9, 9, 9]
    # The conversations, their messages, their files' refs and bytes: not one query per conversation.
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) <= 6, statements


def test_the_stored_tree_is_a_tree_after_import(session, engine):
    ids = branched(session)
    (copy,) = repo.import_json(session=session, owner="bob", check_attachment=check,
                               data=repo.export_json(session=session, owner=OWNER, conversation_id=ids["cid"]))
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT m.position, p.position FROM message m LEFT JOIN message p ON p.id = m.parent_id "
            "WHERE m.conversation_id = :c ORDER BY m.position"), {"c": copy.hex if engine.dialect.name == "sqlite" else copy}
        ).all()  # fmt: skip
    assert [parent for _, parent in rows] == PARENTS
