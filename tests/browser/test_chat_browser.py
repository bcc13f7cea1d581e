"""Parley in a real browser: stream, stop, reload and reopen, switch model, errors, two users."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.fakes import Scenario

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
# The module's apps (tests/browser/conftest.py starts them while the module before this one runs).
APPS = {"server": {}, "users_server": {"APP_USERS": "alice:wonderland,bob:builder"}}


def wait_until(predicate, timeout=20.0, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def open_app(page, url):
    page.goto(url)
    page.wait_for_selector("#msg textarea")
    # The sidebar list and the owner id arrive with the load events.
    wait_ready(page)


def wait_ready(page):
    """The load events have run: the greeting names the owner (so the list is loaded too)."""
    page.wait_for_function("() => document.querySelector('#model-picker input') !== null")
    page.locator(".parley-muted", has_text="aved").or_(page.locator(".parley-muted", has_text="Signed in")).first.wait_for()
    page.wait_for_timeout(300)


def pick_model(page, ref):
    box = page.locator("#model-picker input")
    box.click()
    box.fill(ref)
    box.press("Enter")
    page.locator("#msg textarea").click()
    # The box shows the choice's label (e.g. "Anthropic · Echo") once the value matches a choice.
    squash = lambda t: "".join(ch for ch in t.lower() if ch.isalnum())  # noqa: E731
    model_id = squash(ref.split(":", 1)[1])
    wait_until(lambda: model_id in squash(box.input_value()), what=f"model {ref}")


def send(page, text):
    page.locator("#msg textarea").fill(text)
    page.locator("#msg textarea").press("Enter")


def bot_text(page) -> str:
    # One read of every bubble: counting and then reading by index races with bubbles going away (Undo).
    return " ".join(page.locator("[data-testid='bot']").all_inner_texts())


def db_rows(url: str):
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            convs = c.execute(sa.text("select id, owner, title from conversation")).mappings().all()
            msgs = c.execute(sa.text("select conversation_id, position, role, content, finish_reason from message order by position")).mappings().all()
        return convs, msgs
    finally:
        engine.dispose()


def path_users(url: str, title: str) -> list[str]:
    """The user messages of the conversation's current path (what a reopened chat shows)."""
    from sqlmodel import Session, select

    from storage import repository as repo
    from storage.models import Conversation

    engine = sa.create_engine(url)
    try:
        with Session(engine) as s:
            conv = s.exec(select(Conversation).where(Conversation.title == title)).one()
            detail = repo.get_conversation(session=s, owner=conv.owner, conversation_id=conv.id)
            return [m.content for m in detail.messages if m.role == "user"]
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def server(request, apps, fake_server):
    fake_server.set_scenario("story", Scenario(text=" ".join(f"word{i}" for i in range(80)) + " ", tokens=80, rate=40))
    fake_server.set_scenario("long-story", Scenario(tokens=400, rate=15))
    with apps.app(request.module, "server") as (proc, db):
        yield proc, db


@pytest.fixture(scope="module")
def users_server(request, apps):
    """An app with logins (APP_USERS), a database of its own."""
    with apps.app(request.module, "users_server") as (proc, db):
        yield proc, db


def test_stream_stop_reload_reopen_switch_and_error(server, page, artifacts, fake_server):
    proc, db = server
    open_app(page, proc.url)
    page.screenshot(path=str(artifacts / "01-empty.png"))

    # Pick a model and watch the reply stream in.
    pick_model(page, "openai:story")
    send(page, "Tell me a story about a parrot")
    first = wait_until(lambda: len(bot_text(page).split()) >= 3 and bot_text(page), what="first tokens")
    partial_len = len(first.split())
    wait_until(lambda: "word79" in bot_text(page), timeout=30, what="the whole reply")
    assert partial_len < 80, "text appeared before the reply was complete: it streamed"
    wait_until(lambda: "first token" in bot_text(page), what="metrics line")
    page.screenshot(path=str(artifacts / "02-streamed.png"))

    # Stop mid-stream: the partial text stays, is saved as cancelled, and the upstream stream closes.
    pick_model(page, "openai:long-story")
    send(page, "Now a very long one")
    wait_until(lambda: page.locator("button.stop-button").count() > 0 and len(bot_text(page).split()) > 100, what="second reply streaming")
    page.locator("button.stop-button").first.click()
    log = wait_until(lambda: [s for s in fake_server.stream_log if s.model == "long-story" and s.client_closed], what="upstream closed")
    assert log[-1].tokens_sent < 400
    # The reply is shown as saved at once: its text so far, then the Stopped note and its metrics.
    wait_until(lambda: "Stopped" in bot_text(page) and "first token" in bot_text(page).split("Now a very long one")[-1],
               what="the Stopped note and metrics, live")
    stopped_at = bot_text(page)
    time.sleep(0.5)
    assert bot_text(page) == stopped_at, "nothing streams after Stop; the partial text stays"
    page.screenshot(path=str(artifacts / "03-stopped.png"))
    convs, msgs = wait_until(lambda: (lambda r: r if any(m["finish_reason"] == "cancelled" for m in r[1]) else None)(db_rows(db)), what="cancelled reply saved")
    cancelled = [m for m in msgs if m["finish_reason"] == "cancelled"][0]
    assert 0 < len(cancelled["content"].split()) < 400

    # Reload: the open conversation comes back (its id is in the address: ?c=) and is in the sidebar;
    # opening it again from the list restores the same messages.
    page.reload()
    page.wait_for_selector("#msg textarea")
    wait_ready(page)
    item = page.locator("#conv-list label", has_text="Tell me a story about a parrot")
    item.wait_for()
    wait_until(lambda: "word79" in bot_text(page), what="the conversation reopened by the reload")
    item.click()
    wait_until(lambda: "word79" in bot_text(page), what="reopened conversation")
    assert "Now a very long one" in page.locator("[data-testid='user']").all_inner_texts()[-1]
    assert "long-story" in page.locator("#model-picker input").input_value()
    assert "Stopped" in bot_text(page), "the stopped reply is marked when reopened"
    page.screenshot(path=str(artifacts / "04-reopened.png"))

    # Switch model and continue: the follow-up goes to the new model with the whole history.
    pick_model(page, "anthropic:echo")
    send(page, "What did I ask first?")
    wait_until(lambda: "You said: What did I ask first?" in bot_text(page), what="echo reply")
    req = [r for r in fake_server.requests if r.provider == "anthropic" and r.model == "echo"][-1]
    assert len(req.json["messages"]) == 5

    # A failing provider: a clear notice, the partial text kept, no stack trace.
    page.locator("#new-chat").click()
    wait_until(lambda: page.locator("[data-testid='bot']").count() == 0, what="new chat")
    pick_model(page, "gemini:drop-after-5")
    send(page, "This one will fail")
    wait_until(lambda: "cut off" in bot_text(page).lower(), what="error notice")
    assert "Traceback" not in page.content()
    page.screenshot(path=str(artifacts / "05-error.png"))


def test_screenshot_for_readme(server, page, artifacts):
    proc, _ = server
    open_app(page, proc.url)
    pick_model(page, "demo:parley-demo")
    send(page, "What can you do?")
    wait_until(lambda: "first token" in bot_text(page), timeout=30, what="demo reply")
    # The turn's event has ended (saved, the chat idle) once the reply's Branch button is drawn.
    page.get_by_role("button", name="Branch into a new conversation from here").first.wait_for()
    time.sleep(0.5)
    # The picture starts at the question: the log scrolls to its end as a reply streams, which hid it.
    page.evaluate("""() => { for (const el of document.querySelectorAll('#chatbot *'))
        if (el.scrollHeight > el.clientHeight + 4 && getComputedStyle(el).overflowY !== 'visible') el.scrollTop = 0; }""")
    time.sleep(0.3)
    shot = artifacts / "readme.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000, "the screenshot shows the app"
    # Tests never change tracked files: the README picture is updated only on request (README, Development).
    if os.environ.get("PARLEY_UPDATE_SCREENSHOT") == "1":
        docs = ROOT / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copy(shot, docs / "screenshot.png")


def test_two_users_see_only_their_own_chats(users_server, browser, artifacts):
    proc, db = users_server

    def login(name, password):
        ctx = browser.new_context(viewport={"width": 1400, "height": 900})
        pg = ctx.new_page()
        pg.set_default_timeout(20_000)
        pg.goto(proc.url)
        pg.get_by_label("username").fill(name)
        pg.get_by_label("password").fill(password)
        pg.get_by_role("button", name="Login").click()
        pg.wait_for_selector("#msg textarea")
        wait_ready(pg)
        return ctx, pg

    ctx_a, alice = login("alice", "wonderland")
    pick_model(alice, "openai:gpt-test")
    send(alice, "alice's private plans")
    wait_until(lambda: "first token" in bot_text(alice), what="alice reply")
    alice.locator("#conv-list label", has_text="alice's private plans").wait_for()
    assert "Signed in as" in alice.content() and "alice" in alice.locator(".parley-muted").first.inner_text()

    ctx_b, bob = login("bob", "builder")
    send(bob, "bob's notes")
    wait_until(lambda: "first token" in bot_text(bob), what="bob reply")
    try:
        bob.locator("#conv-list label", has_text="bob's notes").wait_for()
    except Exception:
        bob.screenshot(path=str(artifacts / "fail-bob.png"))
        raise
    assert bob.locator("#conv-list label", has_text="alice").count() == 0
    bob.locator("#conv-search input, #conv-search textarea").first.fill("private")
    bob.locator("#conv-search input, #conv-search textarea").first.press("Enter")
    wait_until(lambda: "No messages match" in bob.locator("#search-hits").inner_text(), what="empty search for bob")
    bob.screenshot(path=str(artifacts / "06-bob.png"))
    ctx_a.close()
    ctx_b.close()

    convs, _ = db_rows(db)
    owners = {c["title"]: c["owner"] for c in convs}
    assert owners["alice's private plans"] == "user:alice" and owners["bob's notes"] == "user:bob"


def test_tool_calls_show_as_blocks_in_the_chat(server, page, artifacts, fake_server):
    proc, _ = server
    fake_server.set_scenario("calc-browser", Scenario(
        tool_calls=[{"name": "calculator", "arguments": {"expression": "2**10"}}],
        then=Scenario(text="Two to the tenth is 1024.", tokens=6),
    ))
    open_app(page, proc.url)
    pick_model(page, "openai:calc-browser")
    page.locator("#use-tools input[type=checkbox]").check()
    send(page, "What is 2 to the 10th?")
    wait_until(lambda: "Two to the tenth is 1024." in bot_text(page), what="answer after the tool")
    block = page.locator("[data-testid='bot']", has_text="calculator")
    block.first.wait_for()
    assert "🛠 calculator" in bot_text(page)
    page.locator("button", has_text="calculator").first.click() if page.locator("button", has_text="calculator").count() else None
    page.screenshot(path=str(artifacts / "07-tools.png"))


def test_undo_and_retry_keep_the_store_in_step(server, page, fake_server):
    proc, db = server
    open_app(page, proc.url)
    pick_model(page, "anthropic:echo")
    send(page, "first line for undo")
    wait_until(lambda: "You said: first line for undo" in bot_text(page), what="first reply")
    send(page, "second line to undo")
    wait_until(lambda: "You said: second line to undo" in bot_text(page), what="second reply")
    page.get_by_label("Undo").last.click()
    wait_until(lambda: "second line to undo" not in bot_text(page), what="undo in the chat")
    assert page.locator("#msg textarea").input_value() == "second line to undo", "Undo puts the text back"

    def stored_users():
        _, msgs = db_rows(db)
        convs, _ = db_rows(db)
        conv = next(c for c in convs if c["title"] == "first line for undo")
        return [m["content"] for m in msgs if m["conversation_id"] == conv["id"] and m["role"] == "user"]

    # Undo moves the conversation's current path back; the undone turn stays stored, as another version.
    wait_until(lambda: path_users(db, "first line for undo") == ["first line for undo"], what="undo in the store")
    assert stored_users() == ["first line for undo", "second line to undo"], "Undo deleted the turn"
    page.get_by_label("Retry").last.click()
    wait_until(lambda: len([r for r in fake_server.requests if r.model == "echo" and "first line for undo" in str(r.json)]) >= 2, what="retry request")
    wait_until(lambda: "You said: first line for undo" in bot_text(page), what="retried reply")
    time.sleep(0.5)
    assert stored_users() == ["first line for undo", "second line to undo"], "Retry stored a user message again"
    assert path_users(db, "first line for undo") == ["first line for undo"]
    convs, msgs = db_rows(db)
    mine = [m for m in msgs if m["content"] == "You said: first line for undo"]
    assert len(mine) == 2, ("the retried reply is a second version beside the first", convs, msgs)


def test_a_stopped_reply_shows_as_saved_and_the_chat_goes_on(server, page, fake_server):
    proc, db = server
    open_app(page, proc.url)
    pick_model(page, "openai:long-story")
    send(page, "A long one to stop")
    wait_until(lambda: page.locator("button.stop-button").count() > 0 and len(bot_text(page).split()) > 20, what="streaming")
    page.locator("button.stop-button").first.click()
    wait_until(lambda: "Stopped" in bot_text(page) and "first token" in bot_text(page), what="the Stopped note, live")
    shown = bot_text(page).split("⏹")[0].split()

    # The follow-up continues the same conversation, with the partial reply as history and no UI notes.
    pick_model(page, "anthropic:echo")
    send(page, "And after the stop?")
    wait_until(lambda: "You said: And after the stop?" in bot_text(page), what="the follow-up's reply")
    req = [r for r in fake_server.requests if r.provider == "anthropic" and "And after the stop?" in str(r.json)][-1]
    msgs = req.json["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    sent_partial = str(msgs[1]["content"])
    assert "Stopped" not in sent_partial and "first token" not in sent_partial
    assert sent_partial.split()[: len(shown)] == shown, "the model gets the partial reply the user saw"

    convs, rows = db_rows(db)
    conv = next(c for c in convs if c["title"] == "A long one to stop")
    mine = [(m["role"], m["finish_reason"]) for m in rows if m["conversation_id"] == conv["id"]]
    assert mine == [("user", None), ("assistant", "cancelled"), ("user", None), ("assistant", "stop")], mine
