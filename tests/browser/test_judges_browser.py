"""Judges in a real browser: a blind comparison's judges answer by pane ("Model A") with no model name on the
wire before the vote; after the vote the Leaderboard's judges section ranks the judge apart and audits it.
Screenshots on a desktop and a 390×844 phone."""

from __future__ import annotations

import re
import time

import pytest

from tests.browser.test_chat_browser import wait_until
from tests.browser.test_compare_browser import CAPTURE, events_settled, pick, received
from tests.fakes import Scenario

pytestmark = pytest.mark.browser
APPS: dict[str, dict[str, str]] = {"server": {}}

MODEL_A = "openai:gpt-jdgbr-alpha"
MODEL_B = "anthropic:claude-jdgbr-beta"
JUDGE = "gemini:gemini-jdgbr-judge"
SECRETS = ["jdgbr-alpha", "jdgbr-beta", "openai", "anthropic", "claude"]


@pytest.fixture(scope="module")
def server(request, apps, fake_server):
    fake_server.set_scenario("gpt-jdgbr-alpha", Scenario(text="The tide comes in twice a day, pulled by the moon."))
    fake_server.set_scenario("claude-jdgbr-beta", Scenario(text="Tides happen because of wind."))
    fake_server.set_scenario("gemini-jdgbr-judge", Scenario(text="Answer 1 explains the cause correctly. [[1]]"))
    with apps.app(request.module, "server") as (proc, db):
        yield proc, db


def test_judges_answer_by_pane_before_the_vote_then_rank_apart(server, page, artifacts):
    proc, _ = server
    page.add_init_script(CAPTURE)
    page.goto(proc.url)
    page.get_by_role("tab", name=re.compile("Compare")).click()
    page.wait_for_selector("#cmp-msg textarea")
    pick(page, "#cmp-model-0", MODEL_A)
    pick(page, "#cmp-model-1", MODEL_B)
    page.locator("#cmp-blind input[type=checkbox]").check()
    wait_until(lambda: events_settled(page), what="the page's load and change events to complete")
    page.locator("#cmp-msg textarea").fill("Why are there tides?")
    page.locator("#cmp-send").click()
    page.locator("#cmp-vote-0").wait_for(state="visible", timeout=20_000)
    page.evaluate("window.__rx = []")

    page.locator("#cmp-judges").get_by_text("⚖️ Judges").first.click()
    box = page.locator("#cmp-judges-models input")
    box.click()
    box.fill(JUDGE)
    box.press("Enter")
    page.locator("#cmp-judges-ask").click()
    page.wait_for_function("document.querySelector('#cmp-judges-result').innerText.includes('judge calls')")
    result = page.locator("#cmp-judges-result").inner_text()
    assert "Model A vs Model B" in result and "Names stay hidden until you vote" in result
    assert "flips with the order, so a tie" in result, "answer 1 in both orders: inconsistent, a tie"
    wire = received(page).lower()
    assert "judge calls" in wire
    for secret in SECRETS:
        assert secret not in wire and secret not in result.lower(), f"{secret!r} reached the browser before the vote"
    page.locator("#cmp-judges").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "judges-compare-desktop.png"), full_page=False)

    page.locator("#cmp-vote-0").click()
    page.wait_for_function("document.querySelector('#cmp-status').innerText.includes('Vote saved')")
    page.get_by_role("tab", name=re.compile("Leaderboard")).click()
    page.wait_for_function("document.querySelector('#cmp-judges-boards') && "
                           "document.querySelector('#cmp-judges-boards').innerText.includes('jdgbr-judge')")
    boards = page.locator("#cmp-judges-boards").inner_text()
    assert "gpt-jdgbr-alpha" in boards and "claude-jdgbr-beta" in boards
    agreement = page.locator("#cmp-judges-agreement").inner_text()
    assert JUDGE in agreement and "0%" in agreement  # consistency 0%, agreement 0% with the one vote
    time.sleep(0.3)
    page.locator("#cmp-judges-board").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "judges-board-desktop.png"), full_page=False)

    page.set_viewport_size({"width": 390, "height": 844})
    if page.locator(".sidebar.open").count():  # a phone opens with the sidebar closed; this page was a desktop
        page.locator(".sidebar .toggle-button").click()
        wait_until(lambda: page.locator(".sidebar.open").count() == 0, what="the sidebar to close")
    time.sleep(0.5)
    page.locator("#cmp-judges-board").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "judges-board-phone.png"), full_page=False)
    page.get_by_role("tab", name=re.compile("Arena")).click()
    page.locator("#cmp-judges").scroll_into_view_if_needed()
    time.sleep(0.3)
    page.screenshot(path=str(artifacts / "judges-compare-phone.png"), full_page=False)
