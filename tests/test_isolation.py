"""Auth and isolation: nothing before login; user B reaches none of A's data, by UI events or raw fn_index calls."""

from __future__ import annotations

import json

import httpx
import pytest
import sqlalchemy as sa
from gradio_client import Client

from core.config import new_browser_id
from storage.models import Conversation, Message
from tests.apphelpers import app_env, in_process_app
from tests.gradio_raw import RawGradio

ALICE = ("alice", "wonderland")
BOB = ("bob", "builder")
# Alice's secret: no letters a hex event id, a uuid or a timing could contain by chance (it was "0000", which an
# event id in an error reply once did).
SECRET = "quokka-wombat"


@pytest.fixture(scope="module")
def auth_app(fake_server, tmp_path_factory):
    db = tmp_path_factory.mktemp("authdb") / "parley.db"
    env = app_env(fake_server, f"sqlite:///{db}", APP_USERS="alice:wonderland,bob:builder")
    with in_process_app(env) as (url, services):
        Client(url, auth=ALICE, verbose=False).predict(
            message=f"alice's launch codes are {SECRET}", model="openai:gpt-test", system_prompt="", api_name="/chat")
        with services.engine.connect() as c:
            conv_id = c.execute(sa.select(Conversation.__table__.c.id)).scalar_one()
        yield url, services, conv_id


def snapshot(services):
    with services.engine.connect() as c:
        convs = [dict(r) for r in c.execute(sa.select(Conversation.__table__)).mappings()]
        msgs = [dict(r) for r in c.execute(sa.select(Message.__table__)).mappings()]
    return json.dumps([convs, msgs], default=str, sort_keys=True)


def test_nothing_is_served_before_login(auth_app):
    url, _, _ = auth_app
    for path in ("/config", "/gradio_api/info"):
        assert httpx.get(url + path).status_code == 401, path
    page = httpx.get(url + "/", follow_redirects=True).text
    assert "launch codes" not in page
    r = httpx.post(url + "/gradio_api/queue/join", json={"data": ["x"], "fn_index": 0, "session_hash": "abc"})
    assert r.status_code in (401, 403)
    assert httpx.post(url + "/login", data={"username": "alice", "password": "wrong"}).status_code in (400, 401)


def test_bob_cannot_open_search_rename_delete_or_export_alices_conversation(auth_app):
    url, services, alice_uuid = auth_app
    alice_conv = str(alice_uuid)
    before = snapshot(services)
    bob = RawGradio(url, auth=BOB)
    try:
        # open: the conversation id is client-sent here, so the owner check must refuse it.
        # (Gradio also refuses a radio value that is not among this session's choices.)
        opened = bob.call("open_conversation", [alice_conv, None])
        assert SECRET not in json.dumps(opened)
        # search, list: only Bob's rows.
        found = bob.call("list_choices_1", [None, "launch codes"])
        assert SECRET not in json.dumps(found) and alice_conv not in json.dumps(found)
        assert "No messages match" in json.dumps(found)
        listed = bob.call("list_choices", [None, ""])
        assert alice_conv not in json.dumps(listed)
        # rename, pin, delete, export read the conversation id from server-side state: Bob's is empty.
        for name, data in (("rename", [alice_conv, "pwned", None]), ("toggle_pin", [alice_conv, None]),
                           ("delete", [alice_conv, None]), ("export_json", [alice_conv, None])):
            out = bob.call(name, data)
            assert "launch codes" not in json.dumps(out), name
        # feedback on a forged history goes nowhere either.
        bob.call("feedback", [[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], alice_conv, None])
    finally:
        bob.close()
    assert snapshot(services) == before, "none of Alice's rows changed"


def test_forged_browser_id_does_not_override_a_login(auth_app):
    url, _, _ = auth_app
    bob = RawGradio(url, auth=BOB)
    try:
        out = bob.call("on_load", [new_browser_id()])
        assert "bob" in json.dumps(out)
        listed = bob.call("list_choices", ["user:alice", ""])  # a forged owner value is ignored
        assert "launch codes" not in json.dumps(listed)
    finally:
        bob.close()


def test_logged_in_chat_is_saved_under_the_login(auth_app):
    url, services, alice_conv = auth_app
    with services.engine.connect() as c:
        owner = c.execute(sa.select(Conversation.__table__.c.owner).where(Conversation.__table__.c.id == alice_conv)).scalar_one()
    assert owner == "user:alice"


def test_anonymous_browser_ids_are_random_and_long():
    ids = {new_browser_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) >= len("anon-") + 22 for i in ids)  # 128 bits of randomness, url-safe


def test_anonymous_browsers_are_isolated_by_their_ids(fake_server, tmp_path):
    env = app_env(fake_server, f"sqlite:///{tmp_path / 'anon.db'}")
    with in_process_app(env) as (url, services):
        a_id, b_id = new_browser_id(), new_browser_id()
        a = RawGradio(url)
        a.call("on_load", [a_id])
        # Alice's chat through the API lands under a per-session owner; make one through the store instead.
        from sqlmodel import Session

        from storage import repository as repo

        with Session(services.engine) as s:
            conv = repo.create_conversation(session=s, owner=a_id, first_prompt="anon secret diary")
        b = RawGradio(url)
        b.call("on_load", [b_id])
        listed_a = a.call("list_choices", [None, ""])
        listed_b = b.call("list_choices", [None, ""])
        assert str(conv.id) in json.dumps(listed_a)
        assert str(conv.id) not in json.dumps(listed_b)
        assert "anon secret diary" not in json.dumps(b.call("open_conversation", [str(conv.id), None]))
        a.close()
        b.close()
