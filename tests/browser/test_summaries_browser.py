"""Long conversations in the browser: the folded summary notice, opened to read the summary (desktop and phone)."""

from __future__ import annotations

import pytest

from tests.browser.test_chat_browser import bot_text, open_app, pick_model, send, wait_until
from tests.fakes import Scenario

pytestmark = pytest.mark.browser
SUMMARISER = "gpt-test-sum-browser"
SUMMARY = "The user is planning a trip to Kyoto in April and asked about temples, trains and food."
# A small limit, so that the fourth message already has older ones to summarise.
APPS = {"summaries_server": {"SUMMARY_AFTER_MESSAGES": "4", "SUMMARY_MODEL": f"openai:{SUMMARISER}"}}


@pytest.fixture(scope="module")
def server(request, apps, fake_server):
    fake_server.set_scenario(SUMMARISER, Scenario(text=SUMMARY))
    fake_server.set_scenario("gpt-test-trip", Scenario(text="Here is a short answer about your trip.", tokens=8))
    with apps.app(request.module, "summaries_server") as (proc, db):
        yield proc, db


def test_the_summary_notice_is_folded_and_opens_to_the_summary(server, page, fake_server, artifacts):
    proc, _ = server
    open_app(page, proc.url)
    pick_model(page, "openai:gpt-test-trip")
    for i, question in enumerate(["Temples in Kyoto?", "Trains from Osaka?", "Food to try?", "And in April?"]):
        send(page, question)
        wait_until(lambda n=i: page.locator("[data-testid='bot']", has_text="short answer about your trip").count() > n,
                   what=f"reply {i + 1}")
    notice = page.locator("[data-testid='bot'] .title", has_text="earlier messages were sent to the model as a summary").last
    notice.wait_for()
    assert SUMMARY not in bot_text(page), "folded: only its title shows"
    notice.click()
    wait_until(lambda: SUMMARY in bot_text(page), what="the summary, once the notice is opened")
    notice.scroll_into_view_if_needed()
    page.wait_for_timeout(400)  # for the picture only: the notice's opening animation
    page.screenshot(path=str(artifacts / "summary-notice-desktop.png"))
    page.set_viewport_size({"width": 390, "height": 844})
    page.locator(".sidebar .toggle-button").click()  # a phone shows the chat with the sidebar closed
    page.locator("[data-testid='bot']").last.evaluate("e => e.scrollIntoView({block: 'end'})")
    page.wait_for_timeout(400)
    assert SUMMARY in bot_text(page)
    page.screenshot(path=str(artifacts / "summary-notice-phone.png"))
    # The model was sent the summary in place of the older messages.
    last = [r.json["messages"] for r in fake_server.requests if r.model == "gpt-test-trip"][-1]
    assert last[0]["role"] == "system" and SUMMARY in last[0]["content"]
