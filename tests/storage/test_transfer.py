"""Export to JSON and Markdown, import back, and hostile import files that must write nothing."""

from __future__ import annotations

import json
import re

import pytest
from sqlmodel import SQLModel

from storage import repository as repo
from storage import transfer
from storage.errors import InvalidInput, NotFound
from tests.storage.helpers import chat

HTML = '<img src=x onerror="alert(1)"> & <script>steal()</script>'


def _rich(session, owner="alice"):
    conversation, turns = chat(
        session, owner, [("First question with " + HTML, "Answer **bold**"), ("Second", "Reply two")],
        input_tokens=3, output_tokens=7, ttft_ms=20, duration_ms=90,
    )  # fmt: skip
    repo.set_feedback(session=session, owner=owner, message_id=turns[0].assistant_message_id, feedback="like")
    repo.set_pinned(session=session, owner=owner, conversation_id=conversation, pinned=True)
    ids = repo.begin_turn(session=session, owner=owner, conversation_id=conversation, content="tools?", provider="p", model="m", params={"temperature": 1.0})
    repo.finish_turn(
        session=session, owner=owner, message_id=ids.assistant_message_id, content="used a tool", reasoning="think",
        finish_reason="tool_calls", tool_calls=[{"id": "t1", "name": "search", "arguments": "{}", "result": "<b>r</b>"}],
    )  # fmt: skip
    other, _ = chat(session, owner, [("Another chat", "yes")])
    repo.set_archived(session=session, owner=owner, conversation_id=other, archived=True)
    return conversation, other


def _comparable(detail):
    c = detail.conversation.model_dump(exclude={"id"})
    index = {m.id: i for i, m in enumerate(detail.messages)}
    messages = [{**m.model_dump(exclude={"id", "conversation_id", "parent_id"}), "parent": index.get(m.parent_id)}
                for m in detail.messages]  # fmt: skip
    return c, messages


def test_round_trip(session, count_rows):
    conversation, other = _rich(session)
    exported = repo.export_json(session=session, owner="alice")
    document = json.loads(exported)
    assert document["format"] == "parley.conversations" and document["version"] == 1
    assert len(document["conversations"]) == 2
    new_ids = repo.import_json(session=session, owner="bob", data=exported)
    assert count_rows() == (4, 16)  # alice: 6 + 2 messages, copied once
    originals = [repo.get_conversation(session=session, owner="alice", conversation_id=c) for c in (conversation, other)]
    copies = [repo.get_conversation(session=session, owner="bob", conversation_id=c) for c in new_ids]
    assert [_comparable(d) for d in copies] == [_comparable(d) for d in originals]
    assert {m.id for d in copies for m in d.messages}.isdisjoint({m.id for d in originals for m in d.messages})
    # Search finds imported rows for the new owner.
    assert len(repo.search_messages(session=session, owner="bob", query="tool")) == 1


def test_single_conversation_export(session):
    conversation, _ = _rich(session)
    document = json.loads(repo.export_json(session=session, owner="alice", conversation_id=conversation))
    assert [c["id"] for c in document["conversations"]] == [str(conversation)]
    with pytest.raises(NotFound):
        repo.export_json(session=session, owner="alice", conversation_id="nope")


def test_pending_reply_imports_as_interrupted(session):
    conversation = repo.create_conversation(session=session, owner="alice").id
    repo.begin_turn(session=session, owner="alice", conversation_id=conversation, content="hi")
    (copy,) = repo.import_json(session=session, owner="bob", data=repo.export_json(session=session, owner="alice"))
    assert repo.get_conversation(session=session, owner="bob", conversation_id=copy).messages[1].finish_reason == "interrupted"


def test_markdown_escapes_html(session):
    conversation, _ = _rich(session)
    markdown = repo.export_markdown(session=session, owner="alice", conversation_id=conversation)
    assert "<img" not in markdown and "<script>" not in markdown and "<b>" not in markdown
    assert "&lt;img src=x onerror=\"alert(1)\"&gt; &amp; &lt;script&gt;steal()&lt;/script&gt;" in markdown
    assert "Answer **bold**" in markdown  # Markdown itself is kept
    assert markdown.startswith("# First question with &lt;img")
    assert "## Assistant · demo:echo" in markdown
    assert re.search(r"^> think$", markdown, re.M)
    # No raw angle bracket survives anywhere outside what we wrote ourselves.
    assert "<" not in markdown and ">" not in markdown.replace("\n> ", "\n").replace("\n>\n", "\n")


def test_markdown_of_everything(session):
    _rich(session)
    markdown = repo.export_markdown(session=session, owner="alice")
    assert markdown.count("\n---\n") == 1 and "# Another chat" in markdown


def test_no_column_or_export_field_holds_secrets(session):
    secretish = re.compile(r"key|secret|password|passwd|credential|auth|cookie|session", re.I)
    for table in SQLModel.metadata.sorted_tables:
        for column in table.columns:
            assert not secretish.search(column.name), f"{table.name}.{column.name}"
    _rich(session)
    document = json.loads(repo.export_json(session=session, owner="alice"))
    keys = set(document) | {k for c in document["conversations"] for k in c}
    keys |= {k for c in document["conversations"] for m in c["messages"] for k in m}
    assert not any(secretish.search(k) for k in keys)
    assert "owner" not in keys and "alice" not in json.dumps(document)
    with pytest.raises(InvalidInput):
        repo.create_conversation(session=session, owner="alice", params={"openai_api_key": "sk-x"})


def _valid_document():
    return {
        "format": "parley.conversations",
        "version": 1,
        "conversations": [{"title": "t", "messages": [{"role": "user", "content": "hi"}]}],
    }


def _with(path, value):
    document = _valid_document()
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(document)


HOSTILE_FILES = {
    "not json": "{not json",
    "empty": "",
    "a list": "[]",
    "wrong format": _with(["format"], "chatgpt"),
    "future version": _with(["version"], 2),
    "unknown top key": _with(["extra"], 1),
    "unknown conversation key": _with(["conversations", 0, "owner"], "mallory"),
    "unknown message key": _with(["conversations", 0, "messages", 0, "owner"], "mallory"),
    "number as text": _with(["conversations", 0, "messages", 0, "input_tokens"], "12"),
    "negative tokens": _with(["conversations", 0, "messages", 0, "input_tokens"], -5),
    "float tokens": _with(["conversations", 0, "messages", 0, "input_tokens"], 1.5),
    "bad role": _with(["conversations", 0, "messages", 0, "role"], "admin"),
    "bad finish": _with(["conversations", 0, "messages", 0, "finish_reason"], "exploded"),
    "bad feedback": _with(["conversations", 0, "messages", 0, "feedback"], "meh"),
    "content not text": _with(["conversations", 0, "messages", 0, "content"], {"$gt": ""}),
    "huge content": _with(["conversations", 0, "messages", 0, "content"], "x" * 1_000_001),
    "huge title": _with(["conversations", 0, "title"], "x" * 201),
    "empty title": _with(["conversations", 0, "title"], ""),
    "blank title": _with(["conversations", 0, "title"], "   "),
    "params not object": _with(["conversations", 0, "params"], [1, 2]),
    "secret in params": _with(["conversations", 0, "messages", 0, "params"], {"api_key": "sk-live"}),
    "huge params": _with(["conversations", 0, "params"], {"x": "y" * 20_000}),
    "bad date": _with(["conversations", 0, "created_at"], "yesterday"),
    "tool call extra": _with(["conversations", 0, "messages", 0, "tool_calls"], [{"id": "1", "name": "n", "eval": "x"}]),
    "pinned as text": _with(["conversations", 0, "pinned"], "true"),
    "too many conversations": json.dumps({**_valid_document(), "conversations": [{"title": "t"}] * 1001}),
    "too many messages": _with(["conversations", 0, "messages"], [{"role": "user", "content": "x"}] * 10_001),
    "deep nesting": json.dumps(_valid_document()).replace('"title": "t"', '"title": "t", "params": {"a": ' + "[" * 10_000 + "]" * 10_000 + "}"),
    "bad second conversation": json.dumps(
        {**_valid_document(), "conversations": [{"title": "fine"}, {"title": "bad", "messages": [{"role": "x"}]}]}
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FILES))
def test_hostile_imports_write_nothing(session, count_rows, name):
    chat(session, "alice", [("existing", "row")])
    before = count_rows()
    with pytest.raises(InvalidInput) as error:
        repo.import_json(session=session, owner="bob", data=HOSTILE_FILES[name])
    assert str(error.value)  # a message a person can read
    assert count_rows() == before
    assert repo.list_conversations(session=session, owner="bob", archived=None) == []


def test_oversized_file_is_refused_before_parsing(session, count_rows, monkeypatch):
    monkeypatch.setattr(transfer, "MAX_IMPORT_BYTES", 100)
    with pytest.raises(InvalidInput, match="MB"):
        repo.import_json(session=session, owner="bob", data=b" " * 101)
    assert count_rows() == (0, 0)


def test_html_in_imported_content_stays_inert_text(session):
    (cid,) = repo.import_json(session=session, owner="bob", data=_with(["conversations", 0, "messages", 0, "content"], HTML))
    assert repo.get_conversation(session=session, owner="bob", conversation_id=cid).messages[0].content == HTML
    assert "<script>" not in repo.export_markdown(session=session, owner="bob", conversation_id=cid)
    (hit,) = repo.search_messages(session=session, owner="bob", query="steal")
    assert "<script>" not in hit.snippet and "<mark>steal</mark>" in hit.snippet


def test_minimal_file_and_bytes_input(session):
    ids = repo.import_json(session=session, owner="bob", data=json.dumps(_valid_document()).encode())
    detail = repo.get_conversation(session=session, owner="bob", conversation_id=ids[0])
    assert detail.conversation.title == "t" and [m.content for m in detail.messages] == ["hi"]
    assert repo.import_json(session=session, owner="bob", data=json.dumps({**_valid_document(), "conversations": []})) == []


def test_export_filename():
    assert transfer.export_filename("Héllo / <World>!", "md") == "parley-héllo-world.md"
    assert transfer.export_filename(None, "json") == "parley-conversations.json"
