"""Replicas on one database: a starting process marks only the replies of processes that are gone."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from storage import replicas
from storage import repository as repo
from storage.errors import InvalidInput
from storage.models import Message, Replica, utcnow


def _session(engine, instance_id: str | None) -> Session:
    """A session as core.services opens it for the process `instance_id`."""
    return Session(engine, info={replicas.INSTANCE_KEY: instance_id} if instance_id else {})


def _pending_reply(engine, instance_id: str | None, *, age: timedelta = timedelta(0)):
    """A reply streaming in process `instance_id`, started `age` ago."""
    with _session(engine, instance_id) as session:
        conversation = repo.create_conversation(session=session, owner="alice")
        ids = repo.begin_turn(session=session, owner="alice", conversation_id=conversation.id, content="tell me")
    _set(engine, Message, ids.assistant_message_id, created_at=utcnow() - age)
    return ids


def _set(engine, model, row_id, **values) -> None:
    table = model.__table__
    with engine.begin() as connection:
        connection.execute(sa.update(table).where(table.c.id == row_id).values(**values))


def _reason(engine, message_id) -> str:
    table = Message.__table__
    with engine.connect() as connection:
        return connection.execute(sa.select(table.c.finish_reason).where(table.c.id == message_id)).scalar_one()


def _partial(engine, instance_id: str, message_id, text: str) -> bool:
    with _session(engine, instance_id) as session:
        return repo.save_partial(session=session, owner="alice", message_id=message_id, content=text)


def test_start_up_leaves_a_live_replicas_reply_alone_and_marks_it_once_the_replica_is_gone(engine):
    live = replicas.new_instance_id()
    with Session(engine) as session:
        replicas.beat(session=session, instance_id=live)
    # Long past the grace period: only the heartbeat says the reply is still streaming.
    ids = _pending_reply(engine, live, age=timedelta(minutes=10))
    assert _partial(engine, live, ids.assistant_message_id, "Once upon")

    starting = replicas.Heartbeat(engine, replicas.new_instance_id())
    assert starting.tick() == 0
    assert _reason(engine, ids.assistant_message_id) == "pending"
    assert _partial(engine, live, ids.assistant_message_id, "Once upon a time"), "partial saves carry on"

    _set(engine, Replica, live, last_seen=utcnow() - timedelta(seconds=replicas.GRACE_S + 5))  # it died
    assert starting.tick() == 1
    assert _reason(engine, ids.assistant_message_id) == "interrupted"
    assert not _partial(engine, live, ids.assistant_message_id, "late")
    with Session(engine) as session:
        reply = repo.get_conversation(session=session, owner="alice", conversation_id=ids.conversation_id).messages[1]
    assert reply.content == "Once upon a time", "the text saved so far is kept"


def test_replies_with_no_replica_recorded_go_by_age(engine):
    old = _pending_reply(engine, None, age=timedelta(minutes=5))
    recent = _pending_reply(engine, None, age=timedelta(seconds=5))
    with Session(engine) as session:
        assert repo.mark_interrupted(session=session) == 1
    assert (_reason(engine, old.assistant_message_id), _reason(engine, recent.assistant_message_id)) == ("interrupted", "pending")


def test_an_instance_without_a_heartbeat_row_is_gone(engine):
    ids = _pending_reply(engine, replicas.new_instance_id(), age=timedelta(minutes=2))
    with Session(engine) as session:
        assert repo.mark_interrupted(session=session) == 1
    assert _reason(engine, ids.assistant_message_id) == "interrupted"


def test_a_dead_process_of_this_host_is_written_off_at_start_up_and_a_running_one_is_not(engine):
    """A restart after a crash need not wait for the grace period: the old pid is gone."""
    dead_pid = _pid_of_finished_process()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        dead, alive = replicas.new_instance_id(), replicas.new_instance_id()
        with Session(engine) as session:
            replicas.beat(session=session, instance_id=dead)
            replicas.beat(session=session, instance_id=alive)
        _set(engine, Replica, dead, pid=dead_pid)
        _set(engine, Replica, alive, pid=running.pid)
        dead_reply, live_reply = _pending_reply(engine, dead), _pending_reply(engine, alive)

        heartbeat = replicas.Heartbeat(engine, replicas.new_instance_id(), interval=3600)
        try:
            assert heartbeat.start() == 1
        finally:
            heartbeat.stop()  # marks its own replies only: it has none
        assert _reason(engine, dead_reply.assistant_message_id) == "interrupted"
        assert _reason(engine, live_reply.assistant_message_id) == "pending"
        with engine.connect() as connection:
            ids = set(connection.execute(sa.select(Replica.__table__.c.id)).scalars())
        assert dead not in ids and alive in ids
    finally:
        running.kill()
        running.wait()


def _pid_of_finished_process() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # waited for: no zombie, the pid is free
    return child.pid


def test_stopping_marks_only_this_processs_pending_replies(engine):
    mine, other = replicas.new_instance_id(), replicas.new_instance_id()
    heartbeat = replicas.Heartbeat(engine, mine, interval=3600)
    heartbeat.start()
    with Session(engine) as session:
        replicas.beat(session=session, instance_id=other)
    my_reply, other_reply = _pending_reply(engine, mine), _pending_reply(engine, other)
    heartbeat.stop()
    assert _reason(engine, my_reply.assistant_message_id) == "interrupted"
    assert _reason(engine, other_reply.assistant_message_id) == "pending"


def test_mark_interrupted_refuses_a_negative_grace(engine):
    ids = _pending_reply(engine, None, age=timedelta(hours=1))
    with Session(engine) as session, pytest.raises(InvalidInput):
        repo.mark_interrupted(session=session, grace=timedelta(seconds=-1))
    assert _reason(engine, ids.assistant_message_id) == "pending"


def test_a_starting_app_keeps_another_apps_live_reply(tmp_path):
    """app.create_app used to mark every pending reply, cutting off other replicas' streams."""
    from app import create_app

    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'replicas.db'}", "RATE_LIMIT": "off",
           "DEFAULT_MODEL": "demo:parley-demo", "PARLEY_MODELS_FILE": ""}  # fmt: skip
    _, first = create_app(env, warm=False)
    try:
        conversation = first._call(repo.create_conversation, {"owner": "alice"})
        ids = first._call(repo.begin_turn, {"owner": "alice", "conversation_id": conversation.id, "content": "hi"})
        _, second = create_app(env, warm=False)
        try:
            assert _reason(first.engine, ids.assistant_message_id) == "pending"
            assert first._call(repo.save_partial, {"owner": "alice", "message_id": ids.assistant_message_id, "content": "Hel"})
        finally:
            second.close()
            second.engine.dispose()
        assert _reason(first.engine, ids.assistant_message_id) == "pending", "the second app's shutdown keeps it too"
    finally:
        first.close()
    assert _reason(first.engine, ids.assistant_message_id) == "interrupted", "its own shutdown marks it"
    first.engine.dispose()
