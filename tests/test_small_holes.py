"""Audit issue 12, item 9: lone surrogates in sidebar inputs, export files, the anonymous id check,
and parameters that were refused with a bare "Error"."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from gradio_client import Client
from gradio_client.exceptions import AppError

from core.exports import ExportFiles
from core.identity import owner_for, valid_browser_id
from core.params import ParamsProblem, params_error, params_from_inputs
from storage.models import Conversation
from tests.apphelpers import app_env, in_process_app
from tests.gradio_raw import RawGradio

GOOD_ID = "anon-" + "A" * 22


# -- the anonymous id check -------------------------------------------------------------------------


def test_browser_id_with_a_trailing_newline_is_refused():
    suffix = "\n"
    assert valid_browser_id(GOOD_ID)
    assert not valid_browser_id(GOOD_ID + suffix)
    assert owner_for(None, None, GOOD_ID + suffix) == "session:unknown"
    assert owner_for(None, None, "hf:alice" + suffix) == "session:unknown"
    assert owner_for(None, None, "hf:alice") == "hf:alice"


# -- raw Gradio calls that may carry lone surrogates -------------------------------------------------


def raw_call(raw: RawGradio, fn: int | str, data: list[Any]) -> list[dict[str, Any]]:
    """Every message of one event, with the body JSON-escaped (no client can encode a lone surrogate)."""
    fn_index = raw.fn_index(fn) if isinstance(fn, str) else fn
    payload = {"data": data, "fn_index": fn_index, "session_hash": raw.session_hash, "event_data": None, "trigger_id": None}
    r = raw.http.post("/gradio_api/queue/join", content=json.dumps(payload).encode("ascii"),
                      headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    event_id = r.json()["event_id"]
    messages = []
    with raw.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": raw.session_hash}) as stream:
        for line in stream.iter_lines():
            if not line.startswith("data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("event_id") not in (None, event_id):
                continue
            messages.append(msg)
            if msg.get("msg") in ("process_completed", "close_stream"):
                break
    assert messages and messages[-1].get("msg") == "process_completed", messages[-1:]
    return messages


def fn_of(raw: RawGradio, handler: str, outputs: int | None = None) -> int:
    """The first event whose handler is `handler` (sidebar events are private, so found by name)."""
    for i, dep in enumerate(raw.config["dependencies"]):
        if dep.get("api_name") == handler and (outputs is None or len(dep.get("outputs", ())) == outputs):
            return dep.get("id", i)
    raise KeyError(handler)


def notices(messages: list[dict[str, Any]]) -> list[str]:
    return [m.get("log") or "" for m in messages if m.get("msg") == "log"]


def start_conversation(raw: RawGradio) -> None:
    """One chat turn in this raw session, so its conversation_id State holds a saved conversation."""
    done = raw_call(raw, "chat", ["hello there", None, "openai:echo", "", 1.0, 1.0, 2048, None, "default", "", False, None, None])
    assert done[-1]["success"], done[-1]


@pytest.fixture
def app(fake_server, tmp_path):
    env = app_env(fake_server, f"sqlite:///{tmp_path / 'holes.db'}")
    with in_process_app(env) as (url, services):
        yield url, services


def test_search_with_a_lone_surrogate_answers_and_keeps_the_session(app):
    url, _services = app
    raw = RawGradio(url)
    try:
        start_conversation(raw)
        # No letter or digit: nothing is searched, and the query is echoed back ("No messages match ...").
        done = raw_call(raw, fn_of(raw, "list_choices"), [None, "\ud800"])[-1]
        assert done["success"], done
        hits = json.dumps(done["output"]["data"][1], ensure_ascii=False)
        assert "\\ud800" not in hits and "\ud800" not in hits
        # The session's event stream still works for the next event.
        again = raw_call(raw, fn_of(raw, "list_choices"), [None, "hello"])[-1]
        assert again["success"] and "hello" in json.dumps(again["output"]["data"], ensure_ascii=False)
    finally:
        raw.close()


def test_rename_with_a_lone_surrogate_is_saved_and_bad_titles_get_a_human_message(app):
    url, services = app
    raw = RawGradio(url)
    try:
        start_conversation(raw)
        rename = fn_of(raw, "rename")
        messages = raw_call(raw, rename, [None, "Trip \ud800 notes", None])
        assert messages[-1]["success"], messages[-1]
        assert any("Renamed" in n for n in notices(messages)), notices(messages)
        with services.engine.connect() as c:
            titles = c.execute(sa.select(Conversation.__table__.c.title)).scalars().all()
        assert titles == ["Trip \ufffd notes"]

        empty = raw_call(raw, rename, [None, "   ", None])
        said = notices(empty)
        assert said == ["Not renamed: The title cannot be empty."], said
        too_long = notices(raw_call(raw, rename, [None, "x" * 500, None]))
        assert len(too_long) == 1 and too_long[0].startswith("Not renamed: The title is 500 characters long")
        assert not any("validation error" in n.lower() for n in said + too_long)
        with services.engine.connect() as c:
            assert c.execute(sa.select(Conversation.__table__.c.title)).scalars().all() == ["Trip \ufffd notes"]
    finally:
        raw.close()


# -- parameters ---------------------------------------------------------------------------------------


BAD_PARAMS = [
    ({"temperature": "abc"}, "temperature", "a number from 0 to 2"),
    ({"temperature": None}, None, None),  # unset: the provider's default, not an error
    ({"top_p": 2}, "top_p", "a number from 0 to 1"),
    ({"max_tokens": -1}, "max_tokens", "a whole number from 1 to 65,536"),
    ({"max_tokens": 1.5}, "max_tokens", "a whole number"),
    ({"seed": "x"}, "seed", "a whole number from 0 to 2,147,483,647"),
    ({"effort": "bogus"}, "effort", "one of default, low, medium, high"),
]


@pytest.fixture(scope="module")
def params_app(fake_server, tmp_path_factory):
    env = app_env(fake_server, f"sqlite:///{tmp_path_factory.mktemp('params') / 'p.db'}")
    with in_process_app(env) as (url, _services):
        yield url


@pytest.mark.parametrize("change,name,why", BAD_PARAMS)
def test_bad_parameters_through_the_api_name_the_parameter_and_send_nothing(fake_server, params_app, change, name, why):
    args = {"message": "hi", "model": "openai:gpt-test", "system_prompt": "", "temperature": 1.0, "top_p": 1.0,
            "max_tokens": 2048, "seed": 0, "effort": "default", **change}
    client = Client(params_app, verbose=False)
    before = len(fake_server.requests)
    try:
        reply = client.predict(**args, api_name="/chat")
    except AppError as e:  # what a bare "Error" looks like to an API client
        pytest.fail(f"refused by Gradio before Parley saw it: {e!r}")
    text = json.dumps(reply, ensure_ascii=False)
    if name is None:
        assert "Invalid parameters" not in text and len(fake_server.requests) == before + 1
        return
    assert "Invalid parameters" in text and f"{name} must be {why}" in text, text
    assert len(fake_server.requests) == before, "a refused message is never sent"


@pytest.mark.parametrize("change,name,why", [c for c in BAD_PARAMS if c[1]] + [({"seed": True}, "seed", "a whole number"),
                                                                               ({"temperature": float("nan")}, "temperature", "a number"),
                                                                               ({"max_tokens": [5]}, "max_tokens", "a whole number")])
def test_params_from_inputs_names_each_bad_parameter(change, name, why):
    args = {"temperature": 0.5, "top_p": None, "max_tokens": None, "seed": 0, "effort": "default", **change}
    with pytest.raises(ParamsProblem) as e:
        params_from_inputs(**args)
    assert f"{name} must be {why}" in str(e.value)
    assert params_error(e.value).startswith("Invalid parameters: ") and params_error(e.value).endswith("Nothing was sent.")


def test_params_from_inputs_reports_every_bad_parameter_at_once():
    with pytest.raises(ParamsProblem) as e:
        params_from_inputs("hot", 5, None, "x", None)
    assert [part.split(" must be")[0] for part in str(e.value).split("; ")] == ["temperature", "top_p", "seed"]


def test_params_from_inputs_still_reads_widget_and_text_values():
    p = params_from_inputs("0.7", " 0.9 ", "512", "42", "HIGH")
    assert (p.temperature, p.top_p, p.max_tokens, p.seed, p.effort) == (0.7, 0.9, 512, 42, "high")
    p = params_from_inputs(None, "", 2048.0, 0, "default")
    assert (p.temperature, p.top_p, p.max_tokens, p.seed, p.effort) == (None, None, 2048, None, None)


# -- export files -------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_export_files_are_deleted_after_their_lifetime_and_at_start_up(tmp_path):
    clock = Clock()
    store = ExportFiles(tmp_path / "exports", lifetime=600, clock=clock, timers=False)
    first = store.write("user:alice", "My chat.json", "{}")
    assert first.read_text() == "{}" and first.name == "My-chat.json"
    clock.now += 599
    store.sweep()
    assert first.exists()
    clock.now += 2
    second = store.write("user:alice", "later.md", "# later")  # each new export sweeps
    assert not first.exists() and not first.parent.exists()
    assert second.exists()
    clock.now += 601
    ExportFiles(tmp_path / "exports", lifetime=600, clock=clock, timers=False)  # a restart sweeps too
    assert not second.exists()
    assert list((tmp_path / "exports").iterdir()) == [], "empty owner folders are removed"


def test_export_paths_are_unguessable_and_per_owner(tmp_path):
    store = ExportFiles(tmp_path / "exports", timers=False)
    a1, a2 = store.write("user:alice", "x.json", "1"), store.write("user:alice", "x.json", "2")
    b = store.write("user:bob", "x.json", "3")
    assert a1.parent != a2.parent and a1.parent.parent == a2.parent.parent != b.parent.parent
    assert "alice" not in str(a1) and len(a1.parent.name.split("-", 1)[1]) >= 24
    assert store.may_download(str(a1), "user:alice") and not store.may_download(str(a1), "user:bob")
    assert not store.may_download(str(a1), None)
    assert not store.may_download(str(a1.parent.parent / ".." / b.parent.parent.name / b.parent.name / b.name), "user:alice")
    anon = store.write("anon-" + "z" * 22, "x.json", "4")
    assert store.may_download(str(anon), None)  # nothing to check an anonymous download against: the token is the key
    assert store.may_download("/etc/hostname", None), "files that are not exports are left to Gradio's rules"


def test_an_export_url_is_its_owners_only_and_expires(fake_server, tmp_path):
    env = app_env(fake_server, f"sqlite:///{tmp_path / 'ex.db'}", APP_USERS="alice:pw-a,bob:pw-b")
    with in_process_app(env) as (url, services):
        alice, bob = RawGradio(url, auth=("alice", "pw-a")), RawGradio(url, auth=("bob", "pw-b"))
        try:
            start_conversation(alice)
            done = raw_call(alice, fn_of(alice, "export_json"), [None, None])[-1]
            assert done["success"], done
            file = done["output"]["data"][0]["value"]
            path, file_url = Path(file["path"]), file["url"]
            assert path.is_relative_to(services.exports.root), "served in place, never copied into Gradio's cache"
            got = alice.http.get(file_url)
            assert got.status_code == 200 and "hello there" in got.text
            refused = bob.http.get(file_url)
            assert refused.status_code == 404 and "hello there" not in refused.text
            assert httpx.get(file_url).status_code in (401, 403, 404)  # not logged in at all

            services.exports.clock = lambda: time.time() + services.exports.lifetime + 1
            services.exports.sweep()
            assert not path.exists()
            assert alice.http.get(file_url).status_code in (403, 404)
        finally:
            alice.close()
            bob.close()


def test_bad_batch_settings_through_the_queue_get_a_message_not_a_bare_error(app, fake_server):
    """The Batch tab's number widgets hand their raw value to the handler, which names what is wrong."""
    url, _services = app
    raw = RawGradio(url)
    try:
        run = next(dep.get("id", i) for i, dep in enumerate(raw.config["dependencies"])
                   if str(dep.get("api_name", "")).startswith("run") and len(dep.get("inputs", ())) == 8)
        before = len(fake_server.requests)
        for concurrency, max_tokens in (("many", 64), (2, "lots"), (2, -5)):
            # The last input is the files the prompts name (none here).
            done = raw_call(raw, run, [None, ["openai:echo"], concurrency, "", max_tokens, None, None, None])[-1]
            assert done["success"], done  # Gradio's own check would fail the event with a bare "Error"
            assert "Upload a prompts file first" in json.dumps(done["output"]["data"]), "the handler answered with its message"
        assert len(fake_server.requests) == before, "nothing was run"
    finally:
        raw.close()
