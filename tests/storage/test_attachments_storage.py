"""Attachments in storage: dedup per owner, links with their own names, clean-up, isolation, export and import.

Every test runs on SQLite and PostgreSQL (the `session` / `engine` fixtures of tests/storage/conftest.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import event, inspect, text
from sqlmodel import Session

from chat.types import Attachment as ChatAttachment
from storage import db, transfer
from storage import repository as repo
from storage.attachments import AttachmentIn
from storage.errors import InvalidInput, NotFound
from storage.models import MAX_MESSAGE_ATTACHMENTS
from tests.storage.helpers import chat

PNG = b"\x89PNG\r\n\x1a\n" + b"chart-bytes" * 50
PDF = b"%PDF-1.7\n" + b"paper" * 40
NOTES = b"# Notes\nline two\n"


def png(name: str = "chart.png", data: bytes = PNG) -> AttachmentIn:
    return AttachmentIn(name=name, mime="image/png", data=data, width=120, height=80)


def pdf(name: str = "paper.pdf") -> AttachmentIn:
    return AttachmentIn(name=name, mime="application/pdf", data=PDF, pages=3, text="extracted paper text")


def notes(name: str = "notes.md") -> AttachmentIn:
    return AttachmentIn(name=name, mime="text/plain", data=NOTES, text=NOTES.decode())


def send(session: Session, owner: str, cid: uuid.UUID, prompt: str, files: list[AttachmentIn], reply: str = "ok"):
    ids = repo.begin_turn(session=session, owner=owner, conversation_id=cid, content=prompt, provider="demo",
                          model="echo", attachments=files)  # fmt: skip
    repo.finish_turn(session=session, owner=owner, message_id=ids.assistant_message_id, content=reply, finish_reason="stop")
    return ids


def new_chat(session: Session, owner: str = "alice") -> uuid.UUID:
    return repo.create_conversation(session=session, owner=owner).id


def stored_rows(engine) -> tuple[int, int]:
    with engine.connect() as connection:
        files = connection.execute(text("SELECT count(*) FROM attachment")).scalar_one()
        links = connection.execute(text("SELECT count(*) FROM message_attachment")).scalar_one()
    return files, links


@contextmanager
def statements(engine) -> Iterator[list[str]]:
    """Every SQL statement the engine runs inside the block."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def touches_files(statement: str) -> bool:
    return bool(re.search(r"\battachment\b|message_attachment", statement))


def check(name: str, data: bytes) -> AttachmentIn:
    """A stand-in for core's checker (chat's ingest): knows the three test files by their first bytes."""
    if data.startswith(b"\x89PNG"):
        return AttachmentIn(name=name, mime="image/png", data=data, width=120, height=80)
    if data.startswith(b"%PDF"):
        return AttachmentIn(name=name, mime="application/pdf", data=data, pages=3, text="extracted paper text")
    if data.startswith(b"# Notes"):
        return AttachmentIn(name=name, mime="text/plain", data=data, text=data.decode())
    raise ValueError(f"{name} is not an image, a PDF or a text file.")


# --- storing and reading ----------------------------------------------------------------------


def test_files_are_linked_in_order_and_read_back_without_bytes(session):
    cid = new_chat(session)
    ids = send(session, "alice", cid, "look at these", [png(), pdf(), notes()])
    assert len(ids.attachment_ids) == 3 and len(set(ids.attachment_ids)) == 3

    detail = repo.get_conversation(session=session, owner="alice", conversation_id=cid)
    user, reply = detail.messages
    assert [(a.name, a.mime, a.size, a.width, a.height, a.pages) for a in user.attachments] == [
        ("chart.png", "image/png", len(PNG), 120, 80, None),
        ("paper.pdf", "application/pdf", len(PDF), None, None, 3),
        ("notes.md", "text/plain", len(NOTES), None, None, None),
    ]
    assert [a.id for a in user.attachments] == ids.attachment_ids
    assert user.attachments[0].sha256 == hashlib.sha256(PNG).hexdigest()
    assert reply.attachments == []
    assert "data" not in user.attachments[0].model_dump()  # refs never carry the bytes

    files = repo.conversation_attachments(session=session, owner="alice", conversation_id=cid)
    assert list(files) == [0]
    assert [(f.name, f.data, f.text) for f in files[0]] == [
        ("chart.png", PNG, None), ("paper.pdf", PDF, "extracted paper text"), ("notes.md", NOTES, NOTES.decode()),
    ]  # fmt: skip

    one = repo.get_attachment(session=session, owner="alice", attachment_id=str(ids.attachment_ids[1]))
    assert (one.name, one.mime, one.data, one.pages) == ("paper.pdf", "application/pdf", PDF, 3)


def test_chat_attachments_are_accepted_as_they_are(session):
    # core hands over chat.types.Attachment (storage cannot import chat): same attribute names.
    cid = new_chat(session)
    sent = ChatAttachment(name="chart.png", mime="image/png", data=PNG, sha256=hashlib.sha256(PNG).hexdigest(),
                          size=len(PNG), width=120, height=80)  # fmt: skip
    ids = send(session, "alice", cid, "chart?", [sent])
    assert repo.get_attachment(session=session, owner="alice", attachment_id=ids.attachment_ids[0]).data == PNG


def test_same_bytes_under_two_names_is_one_file_and_two_links(session, engine):
    cid = new_chat(session)
    first = send(session, "alice", cid, "one", [png("chart.png")])
    second = send(session, "alice", cid, "two", [png("same-chart.png"), png("again.png")])
    other = send(session, "alice", new_chat(session), "three", [png("elsewhere.png")])
    assert first.attachment_ids[0] == second.attachment_ids[0] == second.attachment_ids[1] == other.attachment_ids[0]
    assert stored_rows(engine) == (1, 4)
    names = [[a.name for a in m.attachments] for m in repo.get_conversation(
        session=session, owner="alice", conversation_id=cid).messages]  # fmt: skip
    assert names == [["chart.png"], [], ["same-chart.png", "again.png"], []]
    # Another owner's identical bytes are another owner's row.
    bob = send(session, "bob", new_chat(session, "bob"), "mine", [png()])
    assert bob.attachment_ids[0] != first.attachment_ids[0]
    assert stored_rows(engine) == (2, 5)


def test_a_chat_without_files_costs_no_attachment_query(session, engine):
    plain, _ = chat(session, "alice", [("a", "b"), ("c", "d")])
    with statements(engine) as seen:
        detail = repo.get_conversation(session=session, owner="alice", conversation_id=plain)
    assert all(m.attachments == [] for m in detail.messages)
    assert not any(touches_files(s) for s in seen), seen
    baseline = len(seen)

    with_files = new_chat(session)
    send(session, "alice", with_files, "a", [png(), pdf()])
    send(session, "alice", with_files, "c", [])
    with statements(engine) as seen:
        detail = repo.get_conversation(session=session, owner="alice", conversation_id=with_files)
    assert len(seen) == baseline + 1  # one query for every message's files
    assert not any(re.search(r"\bdata\b", s) for s in seen)  # and none of the bytes
    assert [len(m.attachments) for m in detail.messages] == [2, 0, 0, 0]


def test_a_turn_without_files_writes_nothing_more(session, engine):
    cid, _ = chat(session, "alice", [("first", "turn")])  # past the first turn, which also sets the title
    with statements(engine) as seen:
        repo.begin_turn(session=session, owner="alice", conversation_id=cid, content="plain")
    assert not any(touches_files(s) for s in seen), seen
    with statements(engine) as with_files:
        repo.begin_turn(session=session, owner="alice", conversation_id=cid, content="files", attachments=[png()])
    assert len([s for s in with_files if not touches_files(s)]) == len(seen)


# --- isolation ----------------------------------------------------------------------------------


def test_another_owner_cannot_read_a_file(session):
    ids = send(session, "alice", new_chat(session), "secret chart", [png()])
    aid = ids.attachment_ids[0]
    for owner, attachment_id in (("bob", aid), ("alice", uuid.uuid4()), ("alice", "not-an-id"), ("alice", None)):
        with pytest.raises(NotFound) as error:
            repo.get_attachment(session=session, owner=owner, attachment_id=attachment_id)
        assert "attachment" in str(error.value)
    with pytest.raises(NotFound):
        repo.conversation_attachments(session=session, owner="bob", conversation_id=ids.conversation_id)


# --- clean-up -----------------------------------------------------------------------------------


def test_deleting_a_chat_removes_only_the_files_nothing_else_links(session, engine):
    gone, kept = new_chat(session), new_chat(session)
    only_here = send(session, "alice", gone, "pdf", [pdf(), png()]).attachment_ids[0]
    shared = send(session, "alice", kept, "png", [png("kept.png")]).attachment_ids[0]
    bobs = send(session, "bob", new_chat(session, "bob"), "pdf too", [pdf()]).attachment_ids[0]

    repo.delete_conversation(session=session, owner="alice", conversation_id=gone)

    assert stored_rows(engine) == (2, 2)  # alice's PNG (still in `kept`) and bob's PDF
    with pytest.raises(NotFound):
        repo.get_attachment(session=session, owner="alice", attachment_id=only_here)
    assert repo.get_attachment(session=session, owner="alice", attachment_id=shared).name == "kept.png"
    assert repo.get_attachment(session=session, owner="bob", attachment_id=bobs).data == PDF


def test_undo_retry_and_edit_remove_files_no_message_links(session, engine):
    cid = new_chat(session)
    send(session, "alice", cid, "first", [png()])
    second = send(session, "alice", cid, "second", [png("again.png"), pdf()])
    assert stored_rows(engine) == (2, 3)

    # Retry (the reply only): the prompt keeps its files.
    repo.truncate_after(session=session, owner="alice", conversation_id=cid, position=second.assistant_position)
    assert stored_rows(engine) == (2, 3)
    # Undo / Edit of the second prompt: its PDF goes, the PNG stays (the first prompt links it).
    repo.truncate_after(session=session, owner="alice", conversation_id=cid, position=second.user_position)
    assert stored_rows(engine) == (1, 1)
    files = repo.conversation_attachments(session=session, owner="alice", conversation_id=cid)
    assert [f.name for f in files[0]] == ["chart.png"]
    repo.truncate_after(session=session, owner="alice", conversation_id=cid, position=0)
    assert stored_rows(engine) == (0, 0)


# --- bad input ----------------------------------------------------------------------------------

BAD_FILES = {
    "empty": dict(name="a.png", mime="image/png", data=b""),
    "not bytes": dict(name="a.png", mime="image/png", data="text"),
    "wrong hash": dict(name="a.png", mime="image/png", data=PNG, sha256="0" * 64),
    "wrong size": dict(name="a.png", mime="image/png", data=PNG, size=3),
    "no name": dict(name=" / ", mime="image/png", data=PNG),
    "bad mime": dict(name="a.png", mime="<script>", data=PNG),
    "zero width": dict(name="a.png", mime="image/png", data=PNG, width=0),
    "text not text": dict(name="a.txt", mime="text/plain", data=NOTES, text=b"x"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_refused_and_write_nothing(session, engine, count_rows, case):
    cid = new_chat(session)
    before = count_rows()
    with pytest.raises(InvalidInput) as error:
        repo.begin_turn(session=session, owner="alice", conversation_id=cid, content="x", attachments=[BAD_FILES[case]])
    assert str(error.value)
    assert count_rows() == before and stored_rows(engine) == (0, 0)


def test_too_many_files_are_refused(session, engine, count_rows):
    cid = new_chat(session)
    with pytest.raises(InvalidInput, match=str(MAX_MESSAGE_ATTACHMENTS)):
        repo.begin_turn(session=session, owner="alice", conversation_id=cid, content="x",
                        attachments=[png(f"{i}.png") for i in range(MAX_MESSAGE_ATTACHMENTS + 1)])  # fmt: skip
    assert count_rows() == (1, 0) and stored_rows(engine) == (0, 0)


def test_names_are_cleaned(session):
    ids = send(session, "alice", new_chat(session), "x", [png("../../etc/\x00pass\nwd.png")])
    assert repo.get_attachment(session=session, owner="alice", attachment_id=ids.attachment_ids[0]).name == "passwd.png"


# --- compare mode and blind secrecy ---------------------------------------------------------------


def test_every_pane_links_the_prompts_files_and_blind_panes_stay_hidden(session, engine):
    panes = [{"provider": "p1", "model": "m1"}, {"provider": "p2", "model": "m2"}]
    run = repo.begin_comparison(session=session, owner="alice", prompt="read this", panes=panes, blind=True,
                                attachments=[pdf()])  # fmt: skip
    assert stored_rows(engine) == (1, 2)
    for pane in run.panes:
        repo.finish_turn(session=session, owner="alice", message_id=pane.assistant_message_id, content="r", finish_reason="stop")
        with pytest.raises(NotFound):  # a pane of an unvoted blind run reads as nothing, files included
            repo.conversation_attachments(session=session, owner="alice", conversation_id=pane.conversation_id)
    assert "paper.pdf" not in repo.export_markdown(session=session, owner="alice")
    repo.vote_comparison(session=session, owner="alice", comparison_id=run.comparison_id, verdict="tie")
    files = repo.conversation_attachments(session=session, owner="alice", conversation_id=run.panes[1].conversation_id)
    assert [f.name for f in files[0]] == ["paper.pdf"]


# --- export and import ----------------------------------------------------------------------------


def test_json_export_carries_files_and_import_restores_them(session, engine):
    cid = new_chat(session)
    send(session, "alice", cid, "files", [png(), notes()])
    send(session, "alice", cid, "the chart again", [png("copy.png")])
    exported = repo.export_json(session=session, owner="alice", conversation_id=cid)
    document = json.loads(exported)
    entry = document["conversations"][0]["messages"][0]["attachments"][0]
    assert set(entry) == {"name", "mime", "size", "sha256", "width", "height", "pages", "data"}
    assert base64.b64decode(entry["data"]) == PNG and entry["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert "attachments" not in document["conversations"][0]["messages"][1]  # replies: no key at all

    (copy,) = repo.import_json(session=session, owner="bob", data=exported, check_attachment=check)
    messages = repo.get_conversation(session=session, owner="bob", conversation_id=copy).messages
    assert [[a.name for a in m.attachments] for m in messages] == [["chart.png", "notes.md"], [], ["copy.png"], []]
    files = repo.conversation_attachments(session=session, owner="bob", conversation_id=copy)
    assert [f.data for f in files[0]] == [PNG, NOTES] and files[2][0].data == PNG
    assert files[0][1].text == NOTES.decode()
    assert stored_rows(engine) == (4, 6)  # alice 2 files / 3 links, bob the same: deduplicated on import too
    # Importing again into the same owner reuses bob's rows.
    repo.import_json(session=session, owner="bob", data=exported, check_attachment=check)
    assert stored_rows(engine) == (4, 9)


def test_files_without_attachments_import_as_before_and_text_exports_are_unchanged(session):
    cid, _ = chat(session, "alice", [("plain", "text")])
    exported = repo.export_json(session=session, owner="alice", conversation_id=cid)
    assert "attachments" not in exported  # the file an older Parley wrote (and can read)
    (copy,) = repo.import_json(session=session, owner="bob", data=exported)  # no checker needed
    assert [m.content for m in repo.get_conversation(session=session, owner="bob", conversation_id=copy).messages] == ["plain", "text"]


def _file_with(entry_changes: dict | None = None, **message_changes) -> str:
    entry = {"name": "chart.png", "mime": "image/png", "size": len(PNG), "sha256": hashlib.sha256(PNG).hexdigest(),
             "width": 120, "height": 80, "pages": None, "data": base64.b64encode(PNG).decode()}  # fmt: skip
    entry.update(entry_changes or {})
    message = {"role": "user", "content": "see", "attachments": [entry], **message_changes}
    return json.dumps({"format": "parley.conversations", "version": 1, "conversations": [{"title": "t", "messages": [message]}]})


HOSTILE_IMPORTS = {
    "damaged bytes": (_file_with({"data": base64.b64encode(PNG[:-1] + b"!").decode()}), "damaged"),
    "not base64": (_file_with({"data": "@@@@"}), "base64"),
    "size lies": (_file_with({"size": 5}), "damaged"),
    "bad hash": (_file_with({"sha256": "xyz"}), "sha256"),
    "unknown key": (_file_with({"path": "/etc/passwd"}), "path"),
    "on a reply": (_file_with(role="assistant"), "user message"),
    "refused by the checker": (_file_with({"data": base64.b64encode(b"MZ\x90\x00exe").decode(), "size": 7,
                                          "sha256": hashlib.sha256(b"MZ\x90\x00exe").hexdigest()}), "not an image"),  # fmt: skip
    "too many": (_file_with(attachments=[json.loads(_file_with())["conversations"][0]["messages"][0]["attachments"][0]]
                            * (MAX_MESSAGE_ATTACHMENTS + 1)), "attachments"),  # fmt: skip
}


@pytest.mark.parametrize("case", sorted(HOSTILE_IMPORTS))
def test_bad_files_in_an_import_write_nothing(session, engine, count_rows, case):
    data, words = HOSTILE_IMPORTS[case]
    with pytest.raises(InvalidInput) as error:
        repo.import_json(session=session, owner="bob", data=data, check_attachment=check)
    assert words in str(error.value)
    assert count_rows() == (0, 0) and stored_rows(engine) == (0, 0)


def test_an_import_with_files_and_no_checker_is_refused(session, engine, count_rows):
    with pytest.raises(InvalidInput, match="checked"):
        repo.import_json(session=session, owner="bob", data=_file_with())
    assert count_rows() == (0, 0) and stored_rows(engine) == (0, 0)
    assert len(repo.import_json(session=session, owner="bob", data=_file_with(), check_attachment=check)) == 1


def test_an_export_too_big_to_import_back_is_refused_before_reading_bytes(session, engine, monkeypatch):
    cid = new_chat(session)
    send(session, "alice", cid, "big", [png()])
    monkeypatch.setattr(transfer, "MAX_IMPORT_BYTES", len(PNG))  # the base64 is 4/3 of it
    with statements(engine) as seen, pytest.raises(InvalidInput, match="one at a time"):
        repo.export_json(session=session, owner="alice")
    assert not any(re.search(r"\bdata\b", s) for s in seen)
    monkeypatch.undo()
    with pytest.raises(InvalidInput, match="one at a time"):  # the deployment's own (lower) import limit
        repo.export_json(session=session, owner="alice", max_bytes=len(PNG))
    assert repo.get_conversation(session=session, owner="alice", conversation_id=cid).messages[0].attachments
    assert json.loads(repo.export_json(session=session, owner="alice", max_bytes=len(PNG) * 2))["conversations"]


def test_markdown_links_each_file_with_its_size(session):
    cid = new_chat(session)
    send(session, "alice", cid, "files", [png("my <i>chart [1].png"), pdf()])
    markdown = repo.export_markdown(session=session, owner="alice", conversation_id=cid)
    sha_png, sha_pdf = hashlib.sha256(PNG).hexdigest(), hashlib.sha256(PDF).hexdigest()
    assert f"(attachments/{sha_png}-my-i-chart-1-.png) (PNG image, 120×80 px, {len(PNG)} B)" in markdown
    assert r"[my &lt;i&gt;chart \[1\].png]" in markdown and "<i>" not in markdown
    assert f"[paper.pdf](attachments/{sha_pdf}-paper.pdf) (PDF, 3 pages, {len(PDF)} B)" in markdown


# --- migration ------------------------------------------------------------------------------------


def test_upgrade_from_0005_gives_old_messages_no_files_and_downgrades_cleanly(empty_engine):
    db.migrate(empty_engine, "0005")
    old = uuid.uuid4()
    as_id = (lambda u: u.hex) if empty_engine.dialect.name == "sqlite" else str
    with empty_engine.begin() as connection:  # rows as 0005 stored them (the ORM writes the newest schema)
        connection.execute(text(
            "INSERT INTO conversation (id, owner, title, kind, pinned, archived, created_at, updated_at) "
            "VALUES (:id, 'alice', 'Old', 'chat', :f, :f, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"id": as_id(old), "f": False})
        for position, role in enumerate(("user", "assistant")):
            connection.execute(text(
                "INSERT INTO message (id, conversation_id, owner, position, role, content, created_at) "
                "VALUES (:id, :c, 'alice', :p, :r, 'before files', CURRENT_TIMESTAMP)"),
                {"id": as_id(uuid.uuid4()), "c": as_id(old), "p": position, "r": role})  # fmt: skip
    db.init_db(empty_engine)
    assert {"attachment", "message_attachment"} <= set(inspect(empty_engine).get_table_names())
    with Session(empty_engine) as session:
        assert [m.attachments for m in repo.get_conversation(session=session, owner="alice", conversation_id=old).messages] == [[], []]
        send(session, "alice", old, "now with a file", [png()])
    from alembic import command

    config = db.alembic_config()
    with empty_engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0005")
    assert "attachment" not in inspect(empty_engine).get_table_names()
    assert "attachment_count" not in {c["name"] for c in inspect(empty_engine).get_columns("message")}
    db.init_db(empty_engine)
    with Session(empty_engine) as session:
        assert len(repo.get_conversation(session=session, owner="alice", conversation_id=old).messages) == 4


# --- a clean-up racing a send of the same file (PostgreSQL: SQLite runs one writer at a time) -----


def test_a_clean_up_that_loses_the_race_to_a_new_link_keeps_the_file(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises writers: the race cannot happen there")
    import threading

    from storage.attachments import check_attachment
    from storage.turns import add_turn

    with Session(engine) as session:
        gone, kept = new_chat(session), new_chat(session)
        aid = send(session, "alice", gone, "first", [pdf()]).attachment_ids[0]
    sender = Session(engine)
    # A send of the same PDF, not committed yet: it has read (and locked) the row and linked it.
    add_turn(sender, "alice", kept, "again", None, None, None, None, commit=False, files=[check_attachment(pdf())])
    outcome: list[object] = []

    def delete() -> None:
        with Session(engine) as deleter:
            try:
                repo.delete_conversation(session=deleter, owner="alice", conversation_id=gone)
                outcome.append("deleted")
            except Exception as e:  # noqa: BLE001 - the assertion below shows it
                outcome.append(e)

    worker = threading.Thread(target=delete)
    worker.start()
    # Wait (no clock: until PostgreSQL says so) for the clean-up to queue behind the sender's row lock.
    with engine.connect() as watcher:
        while worker.is_alive() and not watcher.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM attachment%'"
        )).scalar_one():  # fmt: skip
            watcher.rollback()
    sender.commit()
    sender.close()
    worker.join()

    assert outcome == ["deleted"]
    with Session(engine) as session:
        with pytest.raises(NotFound):
            repo.get_conversation(session=session, owner="alice", conversation_id=gone)
        assert repo.get_attachment(session=session, owner="alice", attachment_id=aid).data == PDF
        assert [a.id for a in repo.get_conversation(session=session, owner="alice", conversation_id=kept).messages[0].attachments] == [aid]
