"""A reply withheld by output moderation in a real browser (issue 18): what streamed is replaced by the notice,
a reload shows the stored notice, and the next message goes on without the withheld turn."""

from __future__ import annotations

import uuid

import pytest

from tests.browser.test_chat_browser import bot_text, open_app, pick_model, send, wait_until
from tests.fakes import Scenario

pytestmark = pytest.mark.browser
# Started while the module before this one runs (tests/browser/conftest.py), with a database of its own.
APPS = {"server": {"MODERATION": "openai", "MODERATION_EVERY_CHARS": "40"}}


@pytest.fixture(scope="module")
def server(request, apps):
    with apps.app(request.module, "server") as (proc, db):
        yield proc, db


def test_a_flagged_reply_is_replaced_by_the_notice(server, page, fake_server, artifacts):
    proc, _ = server
    name = f"modbrowser-{uuid.uuid4().hex[:8]}"
    fake_server.set_scenario(name, Scenario(text="FLAGME " + " ".join(f"tail{i}" for i in range(300)), rate=60))
    open_app(page, proc.url)
    pick_model(page, f"openai:{name}")
    send(page, "tell me something")
    wait_until(lambda: "withheld" in bot_text(page), what="the withheld notice")
    wait_until(lambda: "FLAGME" not in bot_text(page) and "tail" not in bot_text(page), what="the streamed text gone")
    page.screenshot(path=str(artifacts / "moderation-desktop.png"))
    page.set_viewport_size({"width": 390, "height": 844})
    if page.locator(".sidebar.open").count():
        page.locator(".sidebar .toggle-button").click()  # the chat, not the sidebar, as a phone shows it
        wait_until(lambda: page.locator(".sidebar.open").count() == 0, what="the sidebar folded")
        page.wait_for_timeout(600)  # its slide-out animation, for the picture only
    page.screenshot(path=str(artifacts / "moderation-phone.png"))
    page.set_viewport_size({"width": 1400, "height": 900})  # the sidebar's model picker is folded away on a phone

    page.reload()
    wait_until(lambda: "withheld" in bot_text(page), what="the stored notice after a reload")
    assert "FLAGME" not in bot_text(page)

    pick_model(page, "anthropic:echo")
    send(page, "and now?")
    wait_until(lambda: "You said: and now?" in bot_text(page), what="the next reply")
    last = [r for r in fake_server.requests if r.model == "echo"][-1].json
    assert "FLAGME" not in str(last) and "withheld" not in str(last), "the withheld turn is never sent as context"
