"""Accessibility in a real browser: axe-core finds no serious or critical violation on any tab, desktop or phone;
the controls a screen reader user meets first have names; text boxes show focus; a finished reply is announced
once; the headings outline the page (ui/a11y.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.browser.axe import Violation, axe_source, describe, run_axe
from tests.browser.test_chat_browser import open_app, pick_model, wait_until
from tests.fakes import Scenario

pytestmark = pytest.mark.browser
APPS: dict[str, dict[str, str]] = {"server": {}}

#: The tabs a user can open: (name, main tab, its sub-tab or None, what shows once it is drawn, whether opening
#: it loads its content).
TABS = [("Chat", "Chat", None, "#msg textarea", False), ("Compare", "Compare", "Arena", "#cmp-msg textarea", False),
        ("Leaderboard", "Compare", "Leaderboard", "#cmp-board-refresh", True),
        ("Dashboard", "Dashboard", None, "#dash-refresh", True), ("Batch", "Batch", None, "#batch-run", False)]
HEADING_RULES = ["page-has-heading-one", "heading-order", "empty-heading"]
STORY = " ".join(f"word{i}" for i in range(30))

# Every non-empty text the announcer takes, in order (it is created on first use: watch the whole page).
RECORD_ANNOUNCEMENTS = """() => {
    window.__said = [];
    new MutationObserver(() => {
        const words = document.getElementById("parley-announcer")?.textContent || "";
        if (words && words !== window.__said[window.__said.length - 1]) window.__said.push(words);
    }).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def server(request, apps, fake_server):
    fake_server.set_scenario("a11y-story", Scenario(text=STORY, rate=30))
    with apps.app(request.module, "server") as (proc, _db):
        yield proc


@pytest.fixture(scope="module", autouse=True)
def axe_installed() -> None:
    axe_source()  # skips the module, saying how to install it, where npm did not install axe-core


def open_tab(page, name: str, sub: str | None, ready: str, loads: bool) -> None:
    """Open a tab as a user would: its button, or on a narrow screen Gradio's "More tabs" menu. A tab that
    `loads` its content when opened is checked once that event has started and ended (Gradio fades its outputs
    meanwhile, and axe would measure the faded text)."""
    labels = [label for label in (name, sub) if label]
    for label in labels:
        button = page.locator("button[role='tab']", has_text=label)
        if label == labels[-1] and loads:
            with page.expect_response(lambda r: "/queue/join" in r.url):
                click_tab(page, button, label)
        else:
            click_tab(page, button, label)
    page.locator(ready).first.wait_for(state="visible")
    settled(page)


def click_tab(page, button, label: str) -> None:
    if button.count() and button.first.is_visible():
        button.first.click()
    else:
        page.get_by_role("button", name="More tabs").first.click()
        page.locator(".overflow-dropdown button", has_text=label).first.click()


def settled(page) -> None:
    """No component on screen is waiting for an event, or fading back from one (Gradio fades a pending
    component's text, which axe would measure); endless animations (spinners) do not count."""
    page.wait_for_function("""() => !document.querySelector(".pending")
        && ![...document.querySelectorAll("[data-testid='status-tracker']")].some((e) => !e.classList.contains("hide") && e.offsetParent !== null)
        && !document.getAnimations().some((a) => a.playState === "running" && a.effect?.getComputedTiming().endTime !== Infinity)""")


def outline(page) -> list[str]:
    return page.evaluate("""() => [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")]
        .filter((h) => h.offsetParent !== null)
        .map((h) => h.tagName + " " + h.textContent.trim())""")


def focus_outline(page, selector: str) -> str:
    page.locator(selector).focus()
    return page.locator(selector).evaluate("(e) => { const s = getComputedStyle(e); return s.outlineStyle + ' ' + s.outlineWidth; }")


def report(found: dict[str, list[Violation]]) -> str:
    return "\n".join(f"{where}:\n{describe(v)}" for where, v in found.items() if v)


def test_every_tab_on_desktop_and_phone_names_focus_announcement_headings(server, page, artifacts):
    open_app(page, server.url)
    page.evaluate(RECORD_ANNOUNCEMENTS)
    found = {"desktop empty chat": run_axe(page)}  # with the example prompts, gone once a message is sent

    # Names: the message and search boxes are more than "Textbox"; the search button is not blank.
    message = page.get_by_role("textbox", name="Message", exact=True)
    assert message.is_visible()
    assert page.get_by_role("textbox", name="Search your messages", exact=True).is_visible()
    assert page.get_by_role("button", name="Search", exact=True).is_visible()
    # Visible focus: text boxes draw an outline (Gradio's own style is none).
    assert focus_outline(page, "#msg textarea") == "solid 2px"
    assert focus_outline(page, "#conv-search textarea") == "solid 2px"
    # Headings: one h1, then each part of the page under an h2.
    heads = outline(page)
    assert heads[:2] == ["H1 🦜 Parley", "H2 Conversations"] and "H2 Chat" in heads, heads

    # A reply streams: the log stays silent while it does, the Stop button is named, and the finished reply
    # is announced once, whole.
    pick_model(page, "openai:a11y-story")
    message.fill("Tell me a story")
    message.press("Enter")
    stop = page.get_by_role("button", name="Stop", exact=True)
    stop.wait_for(state="visible")
    assert page.locator("#chatbot [role='log']").get_attribute("aria-live") == "off"
    said = wait_until(lambda: page.evaluate("window.__said"), what="the finished reply announced")
    assert len(said) == 1 and said[0].startswith("Reply finished:") and "word29" in said[0], said
    # The message box keeps its name once Gradio empties its placeholder (after the first message).
    assert message.get_attribute("placeholder") == "" and message.is_visible()

    for label, name, sub, ready, loads in TABS:
        open_tab(page, name, sub, ready, loads)
        if label == "Compare":
            # A finished comparison, so its panes' replies and metrics are checked too.
            page.locator("#cmp-msg textarea").fill("Say something")
            page.locator("#cmp-send").click()
            wait_until(lambda: page.locator("#cmp-metrics-0").inner_text().strip() and page.locator("#cmp-metrics-1").inner_text().strip(),
                       what="both panes' metrics")
        found[f"desktop {label}"] = run_axe(page)
        headings = run_axe(page, HEADING_RULES)
        assert not headings, f"{label}: {describe(headings)}"
        page.screenshot(path=str(artifacts / f"a11y-desktop-{label.lower()}.png"))
    assert len(page.evaluate("window.__said")) == 1, "the chat's reply was announced once, and nothing since"

    # The same page on a phone (Gradio's layout follows the width): the sidebar over the chat, then every tab.
    page.set_viewport_size({"width": 390, "height": 844})
    if not page.locator(".sidebar.open").count():
        page.get_by_role("button", name="Toggle Sidebar").first.click()
    page.locator(".sidebar.open").wait_for()
    found["phone sidebar"] = run_axe(page)
    page.get_by_role("button", name="Toggle Sidebar").first.click()
    page.locator(".sidebar.open").wait_for(state="detached")
    for label, name, sub, ready, loads in TABS:
        open_tab(page, name, sub, ready, loads)
        found[f"phone {label}"] = run_axe(page)
        page.screenshot(path=str(artifacts / f"a11y-phone-{label.lower()}.png"))
    assert not any(found.values()), report(found)
    if os.environ.get("PARLEY_UPDATE_SCREENSHOT") == "1":  # the README's phone picture, on request only
        phone_picture_for_readme(page, server.url, artifacts)


def phone_picture_for_readme(page, url: str, artifacts: Path) -> None:
    """The demo model's reply on a phone, as docs/screenshot-phone.png (README, Development)."""
    page.goto(url)
    page.locator("#msg textarea").wait_for()
    if not page.locator(".sidebar.open").count():
        page.get_by_role("button", name="Toggle Sidebar").first.click()
    box = page.locator("#model-picker input")
    box.click()
    box.fill("demo:parley-demo")
    box.press("Enter")
    wait_until(lambda: "demo" in box.input_value().lower(), what="the demo model")
    page.get_by_role("button", name="Toggle Sidebar").first.click()
    page.locator(".sidebar.open").wait_for(state="detached")
    page.locator("#msg textarea").fill("What can you do?")
    page.locator("#msg textarea").press("Enter")
    wait_until(lambda: "first token" in " ".join(page.locator("[data-testid='bot']").all_inner_texts()), timeout=30, what="demo reply")
    page.get_by_role("button", name="Branch into a new conversation from here").first.wait_for()  # the turn has ended
    settled(page)
    # Start at the question (the log scrolls to its end while a reply streams).
    page.evaluate("""() => { for (const el of document.querySelectorAll('#chatbot *'))
        if (el.scrollHeight > el.clientHeight + 4 && getComputedStyle(el).overflowY !== 'visible') el.scrollTop = 0; }""")
    page.wait_for_timeout(300)
    shot = artifacts / "readme-phone.png"
    page.screenshot(path=str(shot))
    shutil.copy(shot, Path(__file__).resolve().parents[2] / "docs" / "screenshot-phone.png")
