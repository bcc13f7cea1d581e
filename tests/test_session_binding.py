"""A Gradio session hash is bound to whoever used it first: another login or browser gets a 403 and nothing else."""

from __future__ import annotations

import json

import httpx
import pytest
from gradio_client import Client

from tests.apphelpers import app_env, in_process_app
from tests.fakes import Scenario
from tests.gradio_raw import RawGradio
from ui.session_guard import COOKIE_UNSECURE, Caller, SessionBindings, SessionGuard

ALICE = ("alice", "wonderland")
BOB = ("bob", "builder")
SECRET_WORDS = [f"alicesecret{i}" for i in range(60)]


@pytest.fixture(scope="module")
def auth_app(fake_server, tmp_path_factory):
    db = tmp_path_factory.mktemp("bindingdb") / "parley.db"
    env = app_env(fake_server, f"sqlite:///{db}", APP_USERS="alice:wonderland,bob:builder")
    with in_process_app(env) as (url, services):
        yield url, services


def answer_of(messages) -> str:
    return "".join(m["content"] for m in messages if not (m.get("metadata") or {}).get("title") and isinstance(m["content"], str))


def start_slow_chat(fake_server, url: str, model: str, auth: tuple[str, str] | None = None):
    """A client whose reply is streaming (the fake has started sending it) when this returns."""
    fake_server.set_scenario(model, Scenario(text=" ".join(SECRET_WORDS) + " ", rate=30))
    client = Client(url, auth=auth, verbose=False) if auth else Client(url, verbose=False)
    job = client.submit(message="tell me my secret", model=f"openai:{model}", system_prompt="", api_name="/chat")
    fake_server.wait_for(lambda: any(r.model == model for r in fake_server.stream_log), timeout=60)
    return client, job


def read_queue_data(http: httpx.Client, session_hash: str) -> tuple[int, str]:
    """Status and body of a queue/data stream, up to its first process_completed (or its end)."""
    text = []
    with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session_hash}) as r:
        for line in r.iter_lines():
            text.append(line)
            if "process_completed" in line:
                break
        return r.status_code, "\n".join(text)


def status_of_stream(http: httpx.Client, path: str) -> int:
    with http.stream("GET", path) as r:
        return r.status_code


def hijack_attempts(attacker: RawGradio, victim_session: str) -> dict[str, int]:
    """Every session-scoped route, called with the victim's session hash; the status of each."""
    http, chat = attacker.http, attacker.fn_index("chat")
    status, body = read_queue_data(http, victim_session)
    assert not any(w in body for w in SECRET_WORDS), "the attacker read none of the victim's reply"
    return {
        "queue/data": status,
        "queue/join": http.post("/gradio_api/queue/join", json={
            "data": ["bob hijack"], "fn_index": chat, "session_hash": victim_session,
            "event_data": None, "trigger_id": None}).status_code,
        "cancel": http.post("/gradio_api/cancel", json={
            "session_hash": victim_session, "fn_index": chat, "event_id": "x"}).status_code,
        "heartbeat": status_of_stream(http, f"/gradio_api/heartbeat/{victim_session}"),
        "deep_link": http.get("/gradio_api/deep_link", params={"session_hash": victim_session}).status_code,
        "component_server": http.post("/gradio_api/component_server", json={
            "data": None, "component_id": 1, "session_hash": victim_session, "fn_name": "x"}).status_code,
    }


def test_bob_cannot_read_join_cancel_or_close_alices_live_session(auth_app, fake_server):
    url, _ = auth_app
    alice, job = start_slow_chat(fake_server, url, "guard-alice", auth=ALICE)
    bob = RawGradio(url, auth=BOB)
    try:
        refused = hijack_attempts(bob, alice.session_hash)
    finally:
        bob.close()
    assert refused == {route: 403 for route in refused}, refused
    assert answer_of(job.result(timeout=60)).split() == SECRET_WORDS, "Alice still got her whole reply"
    assert not any("bob hijack" in json.dumps(r.json) for r in fake_server.requests), "the refused event never ran"


def test_alice_keeps_her_session_and_bob_his_own(auth_app):
    url, _ = auth_app
    alice, bob = RawGradio(url, auth=ALICE), RawGradio(url, auth=BOB)
    try:
        assert "alice" in json.dumps(alice.call("on_load", [None]))
        assert "bob" in json.dumps(bob.call("on_load", [None]))
        # Alice logged in again (a second browser) may use her session: the binding is her login.
        again = RawGradio(url, auth=ALICE)
        again.session_hash = alice.session_hash
        assert "alice" in json.dumps(again.call("on_load", [None]))
        again.session_hash = bob.session_hash
        with pytest.raises(httpx.HTTPStatusError) as refused:
            again.call("on_load", [None])
        assert refused.value.response.status_code == 403
        again.close()
    finally:
        alice.close()
        bob.close()


def test_anonymous_browsers_are_bound_by_their_cookie(fake_server, tmp_path):
    with in_process_app(app_env(fake_server, f"sqlite:///{tmp_path / 'anon.db'}")) as (url, _):
        victim, job = start_slow_chat(fake_server, url, "guard-anon")
        other = RawGradio(url)  # another browser: it got its own cookie with /config
        cookieless = httpx.Client(base_url=url)  # same address, no cookie at all
        try:
            refused = hijack_attempts(other, victim.session_hash)
            assert refused == {route: 403 for route in refused}, refused
            assert other.http.cookies.get(COOKIE_UNSECURE) not in (None, victim.cookies.get(COOKIE_UNSECURE))
            status, body = read_queue_data(cookieless, victim.session_hash)
            assert status == 403 and "alicesecret" not in body
        finally:
            other.close()
            cookieless.close()
        assert answer_of(job.result(timeout=60)).split() == SECRET_WORDS


# -- the middleware alone, over a stand-in app --------------------------------------------------


class Recorder:
    """A stand-in for Gradio's app: records what reached it, answers 200 (an event id for call/)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append((scope["path"], body))
        answer = b'{"event_id": "ev-1"}' if scope["path"].startswith("/gradio_api/call/") else b"{}"
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})


def guarded(recorder: Recorder, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=SessionGuard(recorder), client=(address, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_refused_requests_never_reach_gradio_and_bodies_pass_through_intact():
    recorder = Recorder()
    guard = SessionGuard(recorder)
    a = httpx.AsyncClient(transport=httpx.ASGITransport(app=guard, client=("10.0.0.1", 1)), base_url="http://t")
    b = httpx.AsyncClient(transport=httpx.ASGITransport(app=guard, client=("10.0.0.2", 1)), base_url="http://t")
    body = {"data": ["x" * 100_000], "fn_index": 3, "session_hash": "s1"}
    raw = json.dumps(body).encode()
    assert (await a.post("/gradio_api/queue/join", content=raw)).status_code == 200
    assert recorder.seen[-1][1] == raw, "the body Gradio reads is the one sent"
    reached = len(recorder.seen)
    for call in (b.post("/gradio_api/queue/join", json=body), b.get("/gradio_api/queue/data?session_hash=s1"),
                 b.get("/gradio_api/queue/data?session_hash=mine&session_hash=s1"),
                 b.post("/gradio_api/cancel", json={"session_hash": "s1", "fn_index": 3, "event_id": "e"})):
        r = await call
        assert r.status_code == 403 and "another user" in r.json()["detail"]
    assert len(recorder.seen) == reached, "nothing refused reached Gradio"
    # An upload's progress belongs to whoever started the upload.
    assert (await a.post("/gradio_api/upload?upload_id=u1", content=b"")).status_code == 200
    assert (await b.get("/gradio_api/upload_progress?upload_id=u1")).status_code == 403
    # A sessionless /call binds its event id (its session) before the caller learns it.
    assert (await a.post("/gradio_api/call/chat", json={"data": ["hi"]})).json() == {"event_id": "ev-1"}
    assert (await b.get("/gradio_api/call/chat/ev-1")).status_code == 403
    assert (await b.get("/gradio_api/call/v2/chat/ev-1")).status_code == 403
    assert (await a.get("/gradio_api/call/chat/ev-1")).status_code == 200
    await a.aclose()
    await b.aclose()


async def test_the_page_sets_a_browser_cookie_once():
    client = guarded(Recorder(), "10.0.0.1")
    first = await client.get("/")
    assert COOKIE_UNSECURE in first.cookies
    assert all("HttpOnly" in h for h in first.headers.get_list("set-cookie"))
    again = await client.get("/config")
    assert "set-cookie" not in again.headers, "an existing id is kept"
    await client.aclose()


def test_an_address_binding_accepts_that_address_only():
    bindings = SessionBindings()
    assert bindings.admit("s", Caller("addr:10.0.0.1", "10.0.0.1"))
    # The same client once it holds a cookie, from the same address: still its session.
    assert bindings.admit("s", Caller("browser:abc", "10.0.0.1"))
    assert not bindings.admit("s", Caller("browser:abc", "10.0.0.2"))
    assert bindings.admit("t", Caller("browser:abc", "10.0.0.1"))
    assert not bindings.admit("t", Caller("addr:10.0.0.1", "10.0.0.1")), "a cookie binding needs the cookie"


def test_the_table_is_bounded_and_never_frees_a_live_session():
    bindings = SessionBindings(capacity=3)
    alice, mallory = Caller("user:alice", "a"), Caller("user:mallory", "m")
    bindings.admit("live", alice)
    bindings.pin("live")  # an open stream
    for i in range(100):
        bindings.admit(f"flood{i}", mallory)
    assert len(bindings) == 3
    assert bindings.owner("live") == "user:alice"
    assert not bindings.admit("live", mallory)
    bindings.unpin("live")
    for i in range(100, 103):
        bindings.admit(f"flood{i}", mallory)
    assert bindings.owner("live") is None, "an idle binding is evicted like any other"
