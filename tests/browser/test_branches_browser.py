"""Versions and branches in Chromium: Retry twice shows `‹ 3/3 ›` under the reply; the keyboard goes back to
1/3; Edit of a middle message shows 2/2 under it and the new branch; a reload reopens the same conversation
on the same branch; "Branch" copies the path into a new conversation, which is open and highlighted."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.browser.test_chat_browser import open_app, send, wait_until

pytestmark = pytest.mark.browser
APPS = {"branches_server": {"DEFAULT_MODEL": "demo:parley-demo"}}
SHOTS = Path("/tmp/shots")

#: Every bar the script drew: its row's role and what its navigator says ("" when it has none).
BARS = """() => [...document.querySelectorAll('#chatbot .parley-branches')].map((b) => [
  b.classList.contains('user') ? 'user' : 'bot',
  b.querySelector('.count [aria-hidden]')?.textContent || '',
  !!b.querySelector('button.fork'),
])"""


@pytest.fixture(scope="module")
def server(request, apps):
    with apps.app(request.module, "branches_server") as (proc, db):
        yield proc, db


def bars(page) -> list[tuple[str, str, bool]]:
    return [tuple(b) for b in page.evaluate(BARS)]


def user_texts(page) -> list[str]:
    return [t.strip() for t in page.locator("[data-testid='user']").all_inner_texts()]


def idle(page) -> None:
    """No event is redrawing the chat (the reply has finished streaming)."""
    page.wait_for_function("() => !!document.querySelector(\"#chatbot > [data-testid='status-tracker'].hide\")")


def turn(page, text: str) -> None:
    send(page, text)
    page.locator("[data-testid='bot']", has_text=text).first.wait_for()
    idle(page)


def highlighted(page) -> str:
    return " ".join(page.locator("#conv-list label.selected").all_inner_texts()).strip()


def open_in_address(page) -> str:
    return parse_qs(urlparse(page.url).query).get("c", [""])[0]


def test_retry_navigate_edit_reload_and_fork(server, page):
    proc, _db = server
    SHOTS.mkdir(parents=True, exist_ok=True)
    open_app(page, proc.url)
    for text in ("Plan a trip to Lisbon", "Where should we eat?", "And the museums?"):
        turn(page, text)
    # Every reply can be branched from; nothing has versions yet.
    wait_until(lambda: bars(page) == [("bot", "", True)] * 3, what="a Branch button under each reply")

    # Retry twice: the last reply has three versions, the third shown.
    for expected in ("2/2", "3/3"):
        page.locator("#chatbot button[aria-label='Retry']").last.click()
        wait_until(lambda e=expected: bars(page)[-1:] == [("bot", e, True)], what=f"the reply's navigator at {expected}")
    nav = page.locator("#chatbot .parley-branches.bot").last
    assert nav.get_by_role("button", name="Previous version").is_enabled()
    assert nav.get_by_role("button", name="Next version").is_disabled()
    assert nav.get_by_text("Version 3 of 3").count() == 1  # what a screen reader says
    page.screenshot(path=str(SHOTS / "c2-retried.png"))

    # With the keyboard: Tab from the reply's own buttons to "Previous version", Enter twice.
    page.locator("#chatbot button[aria-label='Retry']").last.focus()
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement?.getAttribute('aria-label')") == "Previous version":
            break
    else:
        pytest.fail("Tab never reached the Previous version button")
    page.keyboard.press("Enter")
    wait_until(lambda: bars(page)[-1:] == [("bot", "2/3", True)], what="version 2 of 3")
    # The redraw keeps the keyboard on the navigator.
    wait_until(lambda: page.evaluate("() => document.activeElement?.getAttribute('aria-label')") == "Previous version",
               what="focus back on Previous version")
    page.keyboard.press("Enter")
    wait_until(lambda: bars(page)[-1:] == [("bot", "1/3", True)], what="version 1 of 3")
    focused = page.evaluate("() => document.activeElement?.getAttribute('aria-label')")
    assert focused == "Next version"  # Previous is disabled at 1/3: the focus moved to the next control
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused navigator button shows where the focus is"
    page.screenshot(path=str(SHOTS / "c2-version-1-of-3.png"))

    # Edit the middle message: a second version of it, and the chat shows the new branch only.
    page.locator("[data-testid='user']").nth(1).hover()
    page.locator("#chatbot button[aria-label='Edit']").nth(1).click()
    page.locator("#chatbot textarea").first.fill("Where should we eat cheaply?")
    page.locator("#chatbot button[aria-label='Submit']").first.click()
    page.locator("[data-testid='bot']", has_text="Where should we eat cheaply?").first.wait_for()
    idle(page)
    wait_until(lambda: bars(page) == [("bot", "", True), ("user", "2/2", False), ("bot", "", True)],
               what="the edited message's navigator at 2/2")
    assert user_texts(page) == ["Plan a trip to Lisbon", "Where should we eat cheaply?"]
    conversation = wait_until(lambda: open_in_address(page), what="the conversation in the address")

    # Back to the first version of that message: its branch comes back, down to its newest reply (3/3).
    page.locator("#chatbot .parley-branches.user").get_by_role("button", name="Previous version").click()
    wait_until(lambda: user_texts(page) == ["Plan a trip to Lisbon", "Where should we eat?", "And the museums?"],
               what="the first version's branch")
    wait_until(lambda: bars(page) == [("bot", "", True), ("user", "1/2", False), ("bot", "", True), ("bot", "3/3", True)],
               what="both navigators")
    page.locator("#chatbot .parley-branches.user").get_by_role("button", name="Next version").click()
    wait_until(lambda: user_texts(page) == ["Plan a trip to Lisbon", "Where should we eat cheaply?"], what="the edited branch again")

    # Reload: the same conversation, on the same branch, with its navigators.
    page.reload()
    page.locator("[data-testid='bot']", has_text="Where should we eat cheaply?").first.wait_for()
    assert open_in_address(page) == conversation
    assert user_texts(page) == ["Plan a trip to Lisbon", "Where should we eat cheaply?"]
    wait_until(lambda: bars(page) == [("bot", "", True), ("user", "2/2", False), ("bot", "", True)], what="navigators after reload")
    wait_until(lambda: highlighted(page) == "Plan a trip to Lisbon", what="the conversation highlighted")

    # Branch from the first reply: a new conversation holding that path, open and highlighted.
    page.locator("#chatbot .parley-branches.bot").first.get_by_role("button", name="Branch into a new conversation from here").click()
    wait_until(lambda: user_texts(page) == ["Plan a trip to Lisbon"], what="the forked path")
    forked = wait_until(lambda: (lambda c: c if c and c != conversation else None)(open_in_address(page)), what="the fork's id in the address")
    wait_until(lambda: highlighted(page) == "Plan a trip to Lisbon (branch)", what="the fork highlighted")
    wait_until(lambda: bars(page) == [("bot", "", True)], what="the fork's reply (no versions of its own)")
    assert len(page.locator("#conv-list label").all_inner_texts()) == 2
    page.screenshot(path=str(SHOTS / "c2-forked.png"))

    # The phone layout: the navigator sits under its bubble and stays usable.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{proc.url}/?c={conversation}")
    page.locator("[data-testid='bot']", has_text="Where should we eat cheaply?").first.wait_for()
    def nav_box():  # the script redraws the navigator after each Gradio redraw: read it once it holds still
        try:
            nav = page.locator("#chatbot .parley-branches.user").first
            nav.scroll_into_view_if_needed(timeout=2_000)
            return nav.bounding_box()
        except PlaywrightError:
            return None

    box = wait_until(nav_box, what="the navigator laid out")
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    page.screenshot(path=str(SHOTS / "c2-phone.png"))
    assert forked != conversation
