"""Share by link in Chromium: Alice (logged in) chats, opens Manage conversation › Share, chooses that the
link shows every version, makes a link; a fresh browser context with no cookies and no login opens it and
sees the conversation read-only; she revokes it in the same panel, and the link shows nothing."""

from __future__ import annotations

import pytest

from tests.browser.test_chat_browser import pick_model, send, wait_ready, wait_until
from tests.fakes import Scenario

pytestmark = pytest.mark.browser
APPS = {"share_server": {"APP_USERS": "alice:wonderland"}}


@pytest.fixture(scope="module")
def share_server(request, apps, fake_server):
    fake_server.set_scenario("share-reply", Scenario(text="Wombats dig burrows with their claws. ", tokens=8))
    with apps.app(request.module, "share_server") as (proc, db):
        yield proc, db


def test_share_open_without_login_revoke(share_server, browser, artifacts):
    proc, _ = share_server
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(20_000)
    page.goto(proc.url)
    page.get_by_label("username").fill("alice")
    page.get_by_label("password").fill("wonderland")
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#msg textarea")
    wait_ready(page)
    pick_model(page, "openai:share-reply")
    send(page, "Tell me about <b>wombats</b>")
    page.locator("[data-testid='bot']", has_text="burrows").first.wait_for()
    page.wait_for_timeout(500)  # the reply is saved and the conversation id set

    page.locator("#manage").get_by_text("Manage conversation").click()
    page.locator("#share-panel").get_by_text("Share").first.click()
    assert page.locator("#share-scope").get_by_label("The conversation as shown").is_checked()  # the default
    page.locator("#share-scope").get_by_label("Every version (retries and edits too)").check()
    page.locator("#share-create").click()
    box = page.locator("#share-link textarea, #share-link input").first
    link = wait_until(lambda: box.input_value() if "/share/" in box.input_value() else None, what="the new link")
    assert link.startswith(proc.url + "/share/"), link  # the full address, ready to paste
    page.screenshot(path=str(artifacts / "share-01-panel.png"))

    stranger = browser.new_context(viewport={"width": 900, "height": 700})  # no cookies, no login
    reader = stranger.new_page()
    reader.goto(link)
    reader.get_by_text("Wombats dig burrows").wait_for()
    assert "Tell me about <b>wombats</b>" in reader.inner_text("main")  # shown as text, not as markup
    assert reader.locator("main b").count() == 0 and reader.locator("#msg").count() == 0
    assert reader.locator("text=openai:share-reply").count() == 1
    assert "Conversation (every version) shared from Parley" in reader.inner_text("header")
    reader.screenshot(path=str(artifacts / "share-02-reader.png"))

    links = page.locator("#share-links input").first
    links.click()
    page.get_by_role("option").filter(has_text="every version").first.click()
    page.locator("#share-revoke").click()
    wait_until(lambda: not page.locator("#share-link").is_visible(), what="the link box to close")

    reader.reload()
    reader.get_by_text("This link is not valid").wait_for()
    assert reader.locator("text=Wombats dig burrows").count() == 0
    stranger.close()
    ctx.close()
