"""The app survives its own death mid-reply and a database that goes away and comes back."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import httpx
import pytest
import sqlalchemy as sa
from gradio_client import Client

from tests.apphelpers import AppProcess, app_env, in_process_app
from tests.fakes.scenarios import default_tokens

pytestmark = pytest.mark.slow


def answer(messages) -> str:
    return "".join(m["content"] for m in messages if not (m.get("metadata") or {}).get("title"))


def test_killed_mid_reply_keeps_the_question_and_marks_the_reply_interrupted(fake_server, tmp_path):
    db = f"sqlite:///{tmp_path / 'kill.db'}"
    env = app_env(fake_server, db)
    proc = AppProcess(env).start()
    try:
        client = Client(proc.url, verbose=False)
        job = client.submit(message="a question before the crash", model="openai:rate-10-tokens-200", system_prompt="", api_name="/chat")
        deadline = time.monotonic() + 30
        # Stream for over 3 s (the reply so far is saved every 2 s), then kill the server.
        while time.monotonic() < deadline and not any(len(answer(o).split()) >= 35 for o in job.outputs()):
            time.sleep(0.1)
        streamed = max((answer(o) for o in job.outputs()), key=len)
        assert len(streamed.split()) >= 35, "the reply had been streaming for a while"
        proc.kill()
    finally:
        proc.stop()
    engine = sa.create_engine(db)
    with engine.connect() as c:
        pending = c.execute(sa.text("select finish_reason from message where role='assistant'")).scalars().all()
    assert pending == ["pending"], "killed before the reply could be finished"
    with AppProcess(env) as again:  # start-up marks what the dead process left behind
        with engine.connect() as c:
            rows = c.execute(sa.text("select role, content, finish_reason from message order by position")).mappings().all()
        assert rows[0]["role"] == "user" and rows[0]["content"] == "a question before the crash"
        assert rows[1]["finish_reason"] == "interrupted"
        kept = rows[1]["content"]
        # The last save can be of text newer than the last update the client got before the kill: both are
        # beginnings of the one reply the fake streams.
        whole = "".join(default_tokens(200))
        assert len(kept.split()) >= 15 and whole.startswith(kept) and whole.startswith(streamed), "most of the reply so far was kept"
        # and the app keeps working
        reply = Client(again.url, verbose=False).predict(message="still there?", model="openai:gpt-test", system_prompt="", api_name="/chat")
        assert "lorem" in answer(reply)
    engine.dispose()


def _pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    done = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action], capture_output=True, timeout=60)
    if done.returncode != 0 and not (action == "start" and b"already running" in done.stderr + done.stdout):
        raise RuntimeError(f"pg_ctlcluster {action} failed: {done.stderr.decode(errors='replace')}")


def _pg_ready(url: str, timeout: float = 30.0) -> None:
    engine = sa.create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect() as c:
                    c.execute(sa.text("select 1"))
                return
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
    finally:
        engine.dispose()


@pytest.fixture
def pg_database():
    """A database of its own on the real PostgreSQL, dropped afterwards."""
    base = os.environ.get("TEST_DATABASE_URL")
    if not base:
        pytest.skip("TEST_DATABASE_URL is not set (no PostgreSQL to test against)")
    if not (shutil.which("pg_ctlcluster") and os.path.isdir("/etc/postgresql") and os.geteuid() == 0):
        pytest.skip("stopping PostgreSQL needs pg_ctlcluster and root")
    name = "parley_resilience_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        _pg_ctl("start")
        _pg_ready(base)
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_database_down_chat_still_streams_and_saves_again_when_it_is_back(fake_server, pg_database):
    env = app_env(fake_server, pg_database)
    with in_process_app(env) as (url, services):
        client = Client(url, verbose=False)
        first = client.predict(message="saved before the outage", model="openai:gpt-test", system_prompt="", api_name="/chat")
        assert "lorem" in answer(first)
        _pg_ctl("stop")
        try:
            during = Client(url, verbose=False).predict(message="sent during the outage", model="openai:gpt-test", system_prompt="", api_name="/chat")
            assert "lorem" in answer(during), "the reply still streams"
            assert "kept and will be saved" in str(during), "the turn is kept until the database is back"
            assert httpx.get(url + "/config").status_code == 200, "the app is still up"
        finally:
            _pg_ctl("start")
            _pg_ready(pg_database)
        after = client.predict(message="saved after the outage", model="openai:gpt-test", system_prompt="", api_name="/chat")
        assert "could not be saved" not in str(after) and "kept" not in str(after)
        # The turn made during the outage (another client, so another owner) is written by the retry loop.
        pending = services.demo.parley.chat.fn.__self__.pending
        deadline = time.monotonic() + 90
        while len(pending) and time.monotonic() < deadline:
            time.sleep(0.5)
        with services.engine.connect() as c:
            contents = c.execute(sa.text("select content from message where role='user' order by created_at")).scalars().all()
        assert sorted(contents) == sorted(["saved before the outage", "sent during the outage", "saved after the outage"])
