"""Issue 15: the open conversation is the highlighted one, the one the Title field and Manage act on,
and the one in the URL (`?c=<id>`), which a reload reopens with its model and settings.

Through the running app and its real handlers: `Page` plays the part of the browser's Gradio client
(it fires an event, runs the events chained after it, and the change events of the State and
component values it changed, with the page's query string on every call, as the client does).
The database is SQLite, and PostgreSQL when TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from chat.registry import Registry, Settings
from core.config import AppConfig
from core.conversations import NOT_YOURS, PAGE, ConversationError, Conversations
from core.exports import ExportFiles
from core.services import Services
from storage import repository as repo
from storage.db import init_db, make_engine
from tests.apphelpers import app_env, in_process_app
from tests.gradio_raw import RawGradio
from tests.storage.conftest import pg_schema_engine

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class Page:
    """One browser tab on the app: its component values, and the events the Gradio client would run."""

    def __init__(self, url: str, query: dict[str, str] | None = None, stored: dict[str, Any] | None = None):
        self.raw = RawGradio(url)
        self.query = query or {}
        self.deps = self.raw.config["dependencies"]
        self.comps = self.raw.components
        self.values: dict[int, Any] = {i: c.get("props", {}).get("value") for i, c in self.comps.items()}
        self.logs: list[str] = []
        self.choices: dict[int, list[Any]] = {}
        self.visible: dict[int, bool] = {i: c.get("props", {}).get("visible", True) is not False for i, c in self.comps.items()}
        # The BrowserState's localStorage: kept across a reload by the test.
        for i, c in self.comps.items():
            if c["type"] == "browserstate" and stored is not None:
                self.values[i] = stored.get("browser")
        self.fire(None, "load")

    def close(self) -> None:
        self.raw.close()

    # -- finding components ----------------------------------------------------------------------

    def id_of(self, elem_id: str) -> int:
        return next(i for i, c in self.comps.items() if c.get("props", {}).get("elem_id") == elem_id)

    def id_labelled(self, label: str) -> int:
        return next(i for i, c in self.comps.items() if c.get("props", {}).get("label") == label)

    def shows(self, elem_id: str) -> bool:
        """Whether the component's own visibility is on (its parents aside)."""
        return self.visible[self.id_of(elem_id)]

    def value(self, elem_id: str) -> Any:
        return self.values.get(self.id_of(elem_id))

    def browser_store(self) -> dict[str, Any]:
        return {"browser": next(self.values[i] for i, c in self.comps.items() if c["type"] == "browserstate")}

    # -- running events --------------------------------------------------------------------------

    def fire(self, target: int | None, event: str, event_data: Any = None) -> None:
        """Run every event listening to (target, event), as the client does."""
        for dep in self.deps:
            if any(t[1] == event and (event == "load" or t[0] == target) for t in dep["targets"]):
                self.run(dep, event_data)

    def run(self, dep: dict[str, Any], event_data: Any = None) -> None:
        ok = True
        if dep.get("backend_fn"):
            ok = self._call(dep, event_data)
        for then in self.deps:
            if then.get("trigger_after") == dep["id"] and (ok or not then.get("trigger_only_on_success")):
                self.run(then)

    def _call(self, dep: dict[str, Any], event_data: Any) -> bool:
        data = [None if self.comps[i]["type"] == "state" else self.values.get(i) for i in dep["inputs"]]
        payload = {"data": data, "fn_index": dep["id"], "session_hash": self.raw.session_hash,
                   "event_data": event_data, "trigger_id": None}
        r = self.raw.http.post("/gradio_api/queue/join", params=self.query, json=payload)
        r.raise_for_status()
        event_id = r.json()["event_id"]
        done: dict[str, Any] = {}
        states: list[int] = []  # a streaming event says which States changed with each update
        with self.raw.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.raw.session_hash}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") not in (None, event_id):
                    continue
                if msg.get("msg") == "log":
                    self.logs.append(msg.get("log") or "")
                states += [i for i in (msg.get("output") or {}).get("changed_state_ids", []) if i not in states]
                if msg.get("msg") == "process_completed":
                    done = msg
                    break
        if not done.get("success"):
            return False
        output = done.get("output") or {}
        changed: list[int] = []
        for i, new in zip(dep["outputs"], output.get("data", []), strict=False):
            if self.comps[i]["type"] == "state":
                continue
            if isinstance(new, dict) and new.get("__type__") == "update":
                if "visible" in new:
                    self.visible[i] = bool(new["visible"])
                if "choices" in new:
                    self.choices[i] = new["choices"]
                if "value" not in new:
                    continue
                new = new["value"]
            if new != self.values.get(i):
                changed.append(i)
            self.values[i] = new
        for i in [*states, *changed]:
            self.fire(i, "change")
        return True

    # -- what a user does ------------------------------------------------------------------------

    def send(self, text: str) -> None:
        box = self.id_of("msg")
        self.values[box] = {"text": text, "files": []}
        self.fire(box, "submit")

    def edit(self, index: int, text: str) -> None:
        chatbot = self.id_of("chatbot")
        previous = self.values[chatbot][index]["content"]
        self.fire(chatbot, "edit", {"index": index, "value": text, "previous_value": previous})

    def click(self, elem_id: str) -> None:
        """A button, by elem_id or (as "label:...") by its text."""
        if elem_id.startswith("label:"):
            button = next(i for i, c in self.comps.items() if c["type"] == "button" and c["props"].get("value") == elem_id[6:])
            self.fire(button, "click")
            return
        self.fire(self.id_of(elem_id), "click")

    def choose(self, elem_id: str, value: Any) -> None:
        """A user's own change of a control (a .change event, as the client runs it)."""
        i = self.id_of(elem_id) if not elem_id.startswith("label:") else self.id_labelled(elem_id[6:])
        self.values[i] = value
        self.fire(i, "change")


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def app(request: pytest.FixtureRequest, fake_server, tmp_path) -> Iterator[tuple[str, Any]]:
    """The app on a fresh database: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        with in_process_app(app_env(fake_server, f"sqlite:///{tmp_path / 'focus.db'}")) as running:
            yield running
        return
    with pg_schema_engine() as engine:
        url = engine.url.render_as_string(hide_password=False)
        with in_process_app(app_env(fake_server, url)) as running:
            yield running


def conversations(services: Any) -> dict[str, str]:
    """Every stored conversation: id -> title."""
    with services.engine.connect() as c:
        rows = c.execute(sa.text("select cast(id as varchar), title from conversation")).all()
    return {str(uuid).replace("-", ""): title for uuid, title in rows}


def hex_id(value: Any) -> str:
    return str(value or "").replace("-", "")


# -- the tests ------------------------------------------------------------------------------------


def test_the_highlight_title_and_delete_follow_the_open_conversation_after_editing_the_first_message(app):
    """The walkthrough's bug: after an Edit of the first message the list kept another conversation highlighted
    and the Title field its name, a new chat was never highlighted, and Delete deleted another conversation
    than the highlighted one. With the tree, the Edit adds a second version of the first message to the same
    conversation: the open, highlighted, named and deleted conversation stays that one throughout."""
    url, services = app
    page = Page(url)
    try:
        page.send("Weather in Bergen")
        (other,) = conversations(services)
        page.click("new-chat")
        page.send("Trip plan to Lisbon")
        (first,) = set(conversations(services)) - {other}
        # A new chat is highlighted in the list as soon as it is saved, and the Title field names it.
        assert hex_id(page.value("conv-list")) == first
        assert page.value("conv-title") == "Trip plan to Lisbon"

        page.edit(0, "Packing list for Oslo")
        assert set(conversations(services)) == {first, other}, "the Edit is a version in the same conversation"
        assert "Packing list for Oslo" in str(page.value("chatbot")) and "Lisbon" not in str(page.value("chatbot"))
        assert hex_id(page.value("conv-list")) == first
        assert page.value("conv-title") == "Trip plan to Lisbon"

        # A confirmation asked for one conversation closes when another is opened (it would delete that one).
        page.click("delete")
        assert page.shows("confirm-row") and "Trip plan to Lisbon" in str(page.value("confirm-text"))
        page.values[page.id_of("conv-list")] = str(uuid.UUID(other))
        page.fire(page.id_of("conv-list"), "input")
        assert page.value("conv-title") == "Weather in Bergen" and not page.shows("confirm-row")
        page.values[page.id_of("conv-list")] = str(uuid.UUID(first))
        page.fire(page.id_of("conv-list"), "input")
        assert "Packing list for Oslo" in str(page.value("chatbot")), "it reopens on the version last shown"

        # Delete names what it will delete: the highlighted conversation (both versions), and only it.
        page.click("delete")
        assert "Delete “Trip plan to Lisbon”?" in str(page.value("confirm-text"))
        page.click("confirm-delete")
        assert set(conversations(services)) == {other}
        assert page.value("conv-list") is None
        assert page.value("conv-title") == ""
    finally:
        page.close()


def test_an_import_keeps_the_open_conversation_highlighted_and_its_title(app):
    url, services = app
    page = Page(url)
    try:
        page.send("Trip plan to Lisbon")
        (first,) = conversations(services)
        page.click("label:Export JSON")
        exported = page.values[page.id_labelled("Download")]
        r = page.raw.http.post("/gradio_api/upload", files=[("files", ("trip.json", Path(exported["path"]).read_bytes()))])
        r.raise_for_status()
        upload = next(i for i, c in page.comps.items() if c["type"] == "uploadbutton")
        page.values[upload] = {"path": r.json()[0], "orig_name": "trip.json", "meta": {"_type": "gradio.FileData"}}
        page.fire(upload, "upload")
        assert len(conversations(services)) == 2
        assert hex_id(page.value("conv-list")) == first
        assert len(page.choices[page.id_of("conv-list")]) == 2
        assert page.value("conv-title") == "Trip plan to Lisbon"
    finally:
        page.close()


def test_a_reload_reopens_the_conversation_in_the_url_with_its_model_and_settings_and_only_for_its_owner(app):
    url, services = app
    page = Page(url)
    try:
        page.choose("model-picker", "openai:echo")
        page.choose("label:System prompt", "Answer like a pirate.")
        page.choose("label:Temperature", 0.3)
        page.send("Where is the treasure?")
        (cid,) = conversations(services)
        # The page's address names the open conversation (the browser writes it from this field).
        assert hex_id(page.value("open-conversation")) == cid
        store = page.browser_store()
    finally:
        page.close()

    reloaded = Page(url, query={"c": page.value("open-conversation")}, stored=store)
    try:
        assert hex_id(reloaded.value("conv-list")) == cid
        assert reloaded.value("conv-title") == "Where is the treasure?"
        assert reloaded.value("model-picker") == "openai:echo"
        assert reloaded.values[reloaded.id_labelled("System prompt")] == "Answer like a pirate."
        assert reloaded.values[reloaded.id_labelled("Temperature")] == 0.3
        shown = [json.dumps(m["content"]) for m in reloaded.value("chatbot")]
        assert "Where is the treasure?" in shown[0] and "You said: Where is the treasure?" in shown[1], shown
        # The next message continues that conversation, not a new one.
        reloaded.send("And the map?")
        assert set(conversations(services)) == {cid}
    finally:
        reloaded.close()

    # Another browser (another owner) with the same link: nothing opens, and it says why.
    stranger = Page(url, query={"c": page.value("open-conversation")})
    try:
        assert not stranger.value("chatbot")
        assert stranger.value("conv-list") is None
        assert stranger.value("conv-title") in ("", None)
        assert stranger.value("open-conversation") in ("", None)
        assert any("not one of yours" in log for log in stranger.logs), stranger.logs
    finally:
        stranger.close()

    # A malformed id says the same, and opens nothing either.
    junk = Page(url, query={"c": "../../etc/passwd"}, stored=store)
    try:
        assert not junk.value("chatbot")
        assert any("not one of yours" in log for log in junk.logs), junk.logs
    finally:
        junk.close()


# -- the use case under it (core.conversations) ------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def use_case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Conversations, sa.Engine]]:
    """Conversations over a migrated SQLite file, or a PostgreSQL schema dropped afterwards."""
    with pg_schema_engine() if request.param == "postgres" else _sqlite(tmp_path) as engine:
        init_db(engine)
        env: dict[str, str] = {}
        services = Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env)), engine)
        try:
            yield Conversations(services, ExportFiles(tmp_path / "exports", timers=False)), engine
        finally:
            services.close()


class _sqlite:
    def __init__(self, tmp_path: Path):
        self.engine = make_engine(f"sqlite:///{tmp_path / 'focus-core.db'}")

    def __enter__(self) -> sa.Engine:
        return self.engine

    def __exit__(self, *exc: object) -> None:
        self.engine.dispose()


def test_the_open_conversation_is_in_the_list_even_past_the_first_page_and_links_open_only_their_owners(use_case):
    convs, engine = use_case
    with Session(engine) as session:
        oldest = str(repo.create_conversation(session=session, owner="user:alice", first_prompt="Trip plan").id)
        for i in range(PAGE + 2):
            repo.create_conversation(session=session, owner="user:alice", first_prompt=f"chat {i}")
        bobs = str(repo.create_conversation(session=session, owner="user:bob", first_prompt="Bob's diary").id)

    focus = asyncio.run(convs.focus("user:alice", oldest))
    assert focus.open is not None and focus.open.title == "Trip plan"
    assert [e.id for e in focus.entries].count(oldest) == 1 and len(focus.entries) == PAGE + 1
    assert asyncio.run(convs.entry("user:alice", oldest)).title == "Trip plan"
    assert asyncio.run(convs.open_link("user:alice", oldest)).title == "Trip plan"

    # Another owner's id highlights nothing, and a link to it opens nothing and says the same as a bad id.
    assert asyncio.run(convs.focus("user:alice", bobs)).open is None
    for link in (bobs, "not-an-id", "x" * 500, "", None, 42):
        with pytest.raises(ConversationError) as refused:
            asyncio.run(convs.open_link("user:alice", link))
        assert refused.value.message == NOT_YOURS
