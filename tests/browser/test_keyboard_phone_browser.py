"""Keyboard and phone in a real browser (issue 17): the keyboard-only journey with the focus visible at every
step, the shortcuts and their `?` help, the model list closing on Tab, a phone at 390x844, and the layout at
1,400 px (four compare panes, the chat's clear/copy icons)."""

from __future__ import annotations

import pytest

from tests.browser.test_chat_browser import bot_text, open_app, pick_model, send, wait_until
from tests.fakes import Scenario
from ui.keys import SHORTCUTS

pytestmark = pytest.mark.browser
# The chat starts on a slow model, so that Escape has a reply to stop.
APPS = {"server": {"DEFAULT_MODEL": "openai:kb-slow"}}

ACTIVE = """() => { const e = document.activeElement; return e ? {tag: e.tagName, label: e.getAttribute('aria-label') || '',
    inMsg: !!e.closest('#msg'), id: e.id || ''} : null; }"""
# A focus style is applied: an outline, or a ring drawn as a shadow (what Gradio uses for some controls).
FOCUS_SHOWN = """() => { const e = document.activeElement; if (!e || e === document.body) return false;
    const c = getComputedStyle(e);
    return (c.outlineStyle !== 'none' && parseFloat(c.outlineWidth) >= 1) || (c.boxShadow && c.boxShadow !== 'none'); }"""


@pytest.fixture(scope="module")
def server(request, apps, fake_server):
    fake_server.set_scenario("kb-slow", Scenario(tokens=400, rate=15))
    fake_server.set_scenario("kb-long", Scenario(text=" ".join(f"line{i}\n\n" for i in range(60)), rate=2000))
    with apps.app(request.module, "server") as (proc, db):
        yield proc, db


def active(page) -> dict:
    return page.evaluate(ACTIVE)


def focus_shown(page) -> bool:
    return page.evaluate(FOCUS_SHOWN)


def streaming(page) -> bool:
    return page.locator("#msg button.stop-button").count() > 0 and len(bot_text(page).split()) > 3


def test_keyboard_only_journey(server, page, fake_server):
    proc, _ = server
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    open_app(page, proc.url)

    # Load: the message box has the focus, and shows it.
    assert active(page)["inMsg"] and active(page)["tag"] == "TEXTAREA", f"focus on load: {active(page)}"
    assert focus_shown(page)

    # Type, Enter: the reply streams; Escape stops it (upstream too), and the focus comes back to the box.
    page.keyboard.type("Tell me a long story")
    page.keyboard.press("Enter")
    wait_until(lambda: streaming(page), what="the reply streaming")
    page.keyboard.press("Escape")
    wait_until(lambda: any(s.model == "kb-slow" and s.client_closed for s in fake_server.stream_log), what="the stream stopped upstream")
    wait_until(lambda: "Stopped" in bot_text(page), what="the Stopped note")
    wait_until(lambda: active(page)["inMsg"] and active(page)["tag"] == "TEXTAREA", what="the focus back in the message box")
    assert focus_shown(page)

    # Shift+Tab from the box reaches the reply's Retry, the focus visible at every step.
    for _ in range(10):
        page.keyboard.press("Shift+Tab")
        assert active(page)["tag"] != "BODY" and focus_shown(page), f"focus not shown on {active(page)}"
        if active(page)["label"] == "Retry":
            break
    assert active(page)["label"] == "Retry", "Shift+Tab never reached Retry"

    # Shift+Esc: back to the message box from anywhere.
    page.keyboard.press("Shift+Escape")
    wait_until(lambda: active(page)["inMsg"] and active(page)["tag"] == "TEXTAREA", what="the focus in the message box")

    # `?` in a text box is a character, not the help; Ctrl+/ opens the help, which lists every shortcut.
    page.keyboard.type("?")
    assert page.locator("#msg textarea").input_value() == "?"
    assert page.locator("#parley-keys[open]").count() == 0
    page.locator("#msg textarea").fill("")
    page.keyboard.press("Control+/")
    help_box = page.locator("#parley-keys[open]")
    help_box.wait_for()
    for shortcut in SHORTCUTS:
        assert shortcut.keys in help_box.inner_text() and shortcut.does in help_box.inner_text()
    assert active(page)["id"] == "parley-keys-close" and focus_shown(page), "the focus moves into the help"
    page.keyboard.press("Escape")
    wait_until(lambda: page.locator("#parley-keys[open]").count() == 0, what="the help closed")
    assert active(page)["inMsg"], "closing the help gives the focus back"

    # Ctrl+Shift+Y copies the last reply (its text, from the reply's own Copy button).
    page.keyboard.press("Control+Shift+Y")
    copied = wait_until(lambda: page.evaluate("navigator.clipboard.readText()"), what="the clipboard")
    assert copied.split()[:3] == bot_text(page).split()[:3]

    # Ctrl+Shift+O: a new chat, focus in the box; a second conversation (stopped at once) for Alt+↑/↓.
    page.keyboard.press("Control+Shift+O")
    wait_until(lambda: page.locator("[data-testid='bot']").count() == 0, what="the new chat")
    wait_until(lambda: active(page)["inMsg"], what="the focus in the message box")
    page.keyboard.type("A second conversation")
    page.keyboard.press("Enter")
    wait_until(lambda: streaming(page), what="the second reply streaming")
    page.keyboard.press("Escape")
    # The stopped reply is redrawn as saved, with its Stopped note (an open before that: the test below).
    page.locator("[data-testid='bot']", has_text="Stopped").first.wait_for()
    page.locator("#conv-list label", has_text="A second conversation").locator("input:checked").wait_for()  # highlighted: open
    wait_until(lambda: "?c=" in page.url, what="the open conversation in the address")
    user_text = lambda: " ".join(page.locator("[data-testid='user']").all_inner_texts())  # noqa: E731
    page.keyboard.press("Alt+ArrowDown")  # the list is newest first: down is the older one
    wait_until(lambda: "Tell me a long story" in user_text(), what="the next conversation opened")
    page.locator("#conv-list label", has_text="Tell me a long story").locator("input:checked").wait_for()
    page.keyboard.press("Alt+ArrowUp")
    wait_until(lambda: "A second conversation" in user_text(), what="the previous conversation opened")

    # Ctrl+K: the search box.
    page.keyboard.press("Control+K")
    wait_until(lambda: active(page)["tag"] in ("INPUT", "TEXTAREA") and page.evaluate("!!document.activeElement.closest('#conv-search')"),
               what="the focus in the search box")

    # The model list closes when the focus leaves it with Tab, and the focus goes on to the next control.
    page.locator("#model-picker input").focus()
    page.keyboard.press("ArrowDown")
    page.locator("[role='listbox']").first.wait_for()
    page.keyboard.press("Tab")
    wait_until(lambda: page.locator("[role='listbox']").count() == 0, what="the model list closed")
    assert active(page)["tag"] != "BODY" and focus_shown(page), f"Tab from the model list lost the focus: {active(page)}"
    page.screenshot(path="/tmp/shots/x2-desktop-keyboard.png")


def test_phone_journey(server, browser):
    proc, _ = server
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = ctx.new_page()
        page.set_default_timeout(20_000)
        open_app(page, proc.url)

        def box_visible() -> bool:
            """The message box is on screen, not scrolled away nor under the sidebar."""
            return page.evaluate("""() => { const box = document.querySelector('#msg textarea'); const r = box.getBoundingClientRect();
                if (r.top < 0 || r.bottom > innerHeight || r.left < 0 || r.right > innerWidth) return false;
                const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
                return !!hit && !!hit.closest('#msg'); }""")

        wait_until(lambda: page.locator(".sidebar.open").count() == 0, what="the sidebar closed at load")
        wait_until(box_visible, what="the message box visible at load")
        assert page.evaluate("scrollY") == 0
        page.screenshot(path="/tmp/shots/x2-phone-load.png")

        # A conversation to open later (stopped at once: the model is slow).
        send(page, "Phone conversation")
        wait_until(lambda: streaming(page), what="the reply streaming")
        # A click event, not a tap at its place: on a phone Gradio's progress overlay over the message box now
        # and then covers Stop for a moment, and the tap would wait for it (noticed; not this test's subject).
        page.locator("#msg button.stop-button").dispatch_event("click")
        wait_until(lambda: "Stopped" in bot_text(page), what="the Stopped note")

        # New chat from the sidebar: the sidebar closes and shows the empty chat.
        page.locator(".sidebar .toggle-button").tap()
        page.locator(".sidebar.open").wait_for()
        page.screenshot(path="/tmp/shots/x2-phone-sidebar.png")
        page.locator("#new-chat").tap()
        wait_until(lambda: page.locator(".sidebar.open").count() == 0, what="the sidebar closed after New chat")
        wait_until(lambda: page.locator("[data-testid='bot']").count() == 0, what="the new chat")

        # Open the saved conversation from the sidebar: it opens and the sidebar closes.
        page.locator(".sidebar .toggle-button").tap()
        page.locator(".sidebar.open").wait_for()
        page.locator("#conv-list label", has_text="Phone conversation").tap()
        wait_until(lambda: "Phone conversation" in " ".join(page.locator("[data-testid='user']").all_inner_texts()), what="the conversation opened")
        wait_until(lambda: page.locator(".sidebar.open").count() == 0, what="the sidebar closed after picking")
        wait_until(box_visible, what="the message box visible")
        page.screenshot(path="/tmp/shots/x2-phone-opened.png")
    finally:
        ctx.close()


def test_layout_at_1400(server, page):
    proc, _ = server
    open_app(page, proc.url)

    # The chat's Clear / Copy-all icons never cover a message: a long chat scrolled so that its first message
    # is at the top of the scrolled area (the README picture had it under the icons).
    pick_model(page, "openai:kb-long")
    send(page, "A long answer, please")
    wait_until(lambda: "line59" in bot_text(page) and "first token" in bot_text(page), what="the long reply")
    overlap = page.evaluate("""() => {
        const wrap = document.querySelector('#chatbot .bubble-wrap'), row = document.querySelector('#chatbot .message-row');
        wrap.scrollTop += row.getBoundingClientRect().top - wrap.getBoundingClientRect().top;
        const w = wrap.getBoundingClientRect(), r = row.getBoundingClientRect();
        const seen = {top: Math.max(w.top, r.top), bottom: Math.min(w.bottom, r.bottom), left: Math.max(w.left, r.left), right: Math.min(w.right, r.right)};
        return [...document.querySelectorAll('#chatbot .top-panel button')].filter((b) => {
            const i = b.getBoundingClientRect();
            return i.width > 0 && i.left < seen.right && i.right > seen.left && i.top < seen.bottom && i.bottom > seen.top;
        }).map((b) => b.getAttribute('aria-label')); }""")
    assert overlap == [], f"icons over the first message: {overlap}"
    page.screenshot(path="/tmp/shots/x2-desktop-first-bubble.png")

    # Four compare panes at 1,400 px (sidebar open): one row of four or two rows of two, never 3 + 1.
    page.locator("#tab-compare-button").click()
    page.locator("#cmp-count label", has_text="4").click()
    page.locator("#cmp-pane-3").wait_for()
    for prefix in ("#cmp-pane-", "#cmp-model-"):
        boxes = page.evaluate("""(prefix) => [0, 1, 2, 3].map((i) => { const r = document.querySelector(prefix + i).getBoundingClientRect();
            return [Math.round(r.top), Math.round(r.left), Math.round(r.right)]; })""", prefix)
        rows = sorted({top for top, _, _ in boxes})
        per_row = [sum(1 for top, _, _ in boxes if top == t) for t in rows]
        assert per_row in ([4], [2, 2]), f"{prefix}: panes per row {per_row} ({boxes})"
        assert all(right <= 1400 for _, _, right in boxes), f"{prefix}: a pane is cut off ({boxes})"
    page.screenshot(path="/tmp/shots/x2-desktop-compare4.png", full_page=True)


def test_quick_steps_show_the_open_conversation(server, page):
    """Alt+↑/↓ pressed in quick succession: the chat shows the conversation that ends up open (highlighted, in
    the address), never one opened a moment before. Gradio copied the chat back into its state as the page had
    it, so an open landing between the copy's send and its run put the older chat back over the newer one."""
    open_app(page, server[0].url)
    pick_model(page, "openai:kb-long")
    topics = ["Topic alpha", "Topic bravo", "Topic charlie"]
    for n, topic in enumerate(topics):
        if n:
            page.keyboard.press("Control+Shift+O")
            wait_until(lambda: page.locator("[data-testid='bot']").count() == 0, what="the new chat")
        send(page, topic)
        page.locator("#conv-list label", has_text=topic).locator("input:checked").wait_for()
        wait_until(lambda: page.locator("#msg button.stop-button").count() == 0, what="the reply finished")
    shown = lambda: " ".join(page.locator("[data-testid='user']").all_inner_texts())  # noqa: E731
    checked = lambda: page.locator("#conv-list label:has(input:checked)").inner_text().strip()  # noqa: E731
    for gap in (0, 40, 80, 120):  # before the fix: 40 and 80 ms failed (4 runs of 4)
        for key in ("Alt+ArrowDown", "Alt+ArrowDown", "Alt+ArrowUp"):
            page.keyboard.press(key)
            page.wait_for_timeout(gap)
        page.wait_for_timeout(1200)  # every event of the steps has run
        # Where the steps end depends on which redraws they met; what is shown must be what is open.
        open_id = page.locator("#conv-list input:checked").get_attribute("value")
        assert shown() == checked() and f"c={open_id}" in page.url, f"{gap} ms apart: {checked()!r} open, {shown()!r} shown"
        page.locator("#conv-list label", has_text=topics[2]).click()  # back to the newest, for the next round
        wait_until(lambda: shown() == topics[2], what="the newest conversation")


def test_open_right_after_stop_stays_open(server, page):
    """Stop, then at once another conversation: Stop's redraw (the stopped reply as saved, a moment later) does
    not take the user back to the stopped conversation."""
    open_app(page, server[0].url)
    shown = lambda: " ".join(page.locator("[data-testid='user']").all_inner_texts())  # noqa: E731
    for n, topic in enumerate(["Stopped first", "Stopped then left"]):
        if n:
            page.keyboard.press("Control+Shift+O")
            wait_until(lambda: page.locator("[data-testid='bot']").count() == 0, what="the new chat")
        send(page, topic)
        wait_until(lambda: streaming(page), what="the reply streaming")
        page.locator("#conv-list label", has_text=topic).locator("input:checked").wait_for()
        page.keyboard.press("Escape")
        if not n:
            page.locator("[data-testid='bot']", has_text="Stopped").first.wait_for()
    page.locator("#conv-list label", has_text="Stopped first").click()
    wait_until(lambda: shown() == "Stopped first", what="the older conversation opened")
    page.wait_for_timeout(1500)  # Stop's redraw has come and gone
    open_id = page.locator("#conv-list input:checked").get_attribute("value")
    assert shown() == "Stopped first" and f"c={open_id}" in page.url
    assert page.locator("#conv-list label:has(input:checked)").inner_text().strip() == "Stopped first"
