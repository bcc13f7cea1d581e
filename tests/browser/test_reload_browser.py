"""The page survives a reload, in Chromium: the open conversation is in the address (`?c=<id>`) and comes
back with its model and system prompt; the list highlights the open conversation (a new chat, after Edit
of the first message, after the reload); Delete names the highlighted one and deletes it; another
browser with the same address opens nothing and is told so."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tests.browser.test_chat_browser import db_rows, open_app, pick_model, send, wait_until

pytestmark = pytest.mark.browser
APPS = {"reload_server": {}}
SHOTS = Path("/tmp/shots")


@pytest.fixture(scope="module")
def reload_server(request, apps):
    with apps.app(request.module, "reload_server") as (proc, db):
        yield proc, db


def highlighted(page) -> str:
    """The text of the selected conversation in the list ("" when none is)."""
    return " ".join(page.locator("#conv-list label.selected").all_inner_texts()).strip()


def open_in_address(page) -> str:
    return parse_qs(urlparse(page.url).query).get("c", [""])[0]


def test_reload_reopens_the_highlighted_conversation_and_delete_names_it(reload_server, page, browser, artifacts):
    proc, db = reload_server
    SHOTS.mkdir(parents=True, exist_ok=True)
    open_app(page, proc.url)
    pick_model(page, "openai:echo")
    page.get_by_role("textbox", name="System prompt", exact=True).fill("Answer like a pirate.")
    send(page, "Trip plan to Lisbon")
    page.locator("[data-testid='bot']", has_text="You said: Trip plan to Lisbon").first.wait_for()
    # A new chat is highlighted once it is saved, and its id is in the address.
    wait_until(lambda: highlighted(page) == "Trip plan to Lisbon", what="the new chat highlighted")
    first = wait_until(lambda: open_in_address(page), what="the conversation in the address")

    # Edit of the first message adds a version of it in the same conversation: it stays the open,
    # highlighted one (before versions, the edit started a new chat and the list kept the old one).
    page.locator("[data-testid='user']").first.hover()  # the message's buttons show on hover
    page.locator("#chatbot button[aria-label='Edit']").first.click()
    editor = page.locator("#chatbot textarea").first
    editor.fill("Trip plan to Porto")
    page.locator("#chatbot button[aria-label='Submit']").first.click()
    page.locator("[data-testid='bot']", has_text="You said: Trip plan to Porto").first.wait_for()
    assert open_in_address(page) == first
    assert highlighted(page) == "Trip plan to Lisbon"

    # A second chat is highlighted and in the address once its first reply is saved.
    page.locator("#new-chat").click()
    send(page, "Packing list for Oslo")
    page.locator("[data-testid='bot']", has_text="You said: Packing list for Oslo").first.wait_for()
    wait_until(lambda: highlighted(page) == "Packing list for Oslo", what="the new chat highlighted")
    second = wait_until(lambda: (lambda c: c if c and c != first else None)(open_in_address(page)), what="its id in the address")

    # Reload: the same conversation, model and system prompt, highlighted.
    page.reload()
    page.locator("[data-testid='bot']", has_text="You said: Packing list for Oslo").first.wait_for()
    wait_until(lambda: highlighted(page) == "Packing list for Oslo", what="the reopened chat highlighted")
    assert open_in_address(page) == second
    assert "echo" in page.locator("#model-picker input").input_value().lower()
    assert page.get_by_role("textbox", name="System prompt", exact=True).input_value() == "Answer like a pirate."
    page.locator("#manage").get_by_text("Manage conversation").click()
    assert page.locator("#conv-title input, #conv-title textarea").first.input_value() == "Packing list for Oslo"
    page.screenshot(path=str(SHOTS / "reload-sidebar.png"))
    page.screenshot(path=str(artifacts / "reload-sidebar.png"))

    # Delete names the highlighted conversation, and deletes that one only.
    page.locator("#delete").click()
    page.locator("#confirm-text", has_text="Delete “Packing list for Oslo”?").wait_for()
    page.locator("#confirm-delete").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "delete-names-it.png"))
    page.locator("#confirm-delete").click()
    wait_until(lambda: [r["title"] for r in db_rows(db)[0]] == ["Trip plan to Lisbon"], what="only the edited chat deleted")
    wait_until(lambda: highlighted(page) == "" and open_in_address(page) == "", what="nothing open after delete")

    # Another browser (another owner) with the first conversation's address: nothing opens, and it says so.
    stranger = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        other = stranger.new_page()
        other.set_default_timeout(20_000)
        other.goto(f"{proc.url}/?c={first}")
        other.get_by_text("not one of yours").first.wait_for()
        assert other.locator("[data-testid='user']").count() == 0
        wait_until(lambda: open_in_address(other) == "", what="the dead link dropped from the address")
    finally:
        stranger.close()
