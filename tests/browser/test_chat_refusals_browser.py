"""A refused message in a real browser: its text comes back to edit, it is never sent nor saved, the chat goes on."""

from __future__ import annotations

import pytest

from tests.browser.test_chat_browser import bot_text, db_rows, open_app, pick_model, send, wait_until

pytestmark = pytest.mark.browser
# Started while the module before this one runs (tests/browser/conftest.py), with a database of its own.
APPS = {"server": {"MAX_MESSAGE_CHARS": "40"}}


@pytest.fixture(scope="module")
def server(request, apps):
    with apps.app(request.module, "server") as (proc, db):
        yield proc, db


def user_bubbles(page) -> list[str]:
    return page.locator("[data-testid='user']").all_inner_texts()


def test_refused_messages_come_back_to_edit_and_never_reach_the_model(server, page, fake_server):
    proc, db = server
    open_app(page, proc.url)
    pick_model(page, "anthropic:echo")
    send(page, "a line that is kept")
    wait_until(lambda: "You said: a line that is kept" in bot_text(page), what="first reply")

    # Too long: refused before the box is cleared, so the text stays there to shorten.
    too_long = "this message is far longer than forty characters"
    send(page, too_long)
    wait_until(lambda: "limited to 40" in page.content(), what="the length refusal")
    assert page.locator("#msg textarea").input_value() == too_long
    assert not any(too_long in t for t in user_bubbles(page)), "a refused message is not added to the chat"

    # Refused by the server (an unknown model): marked as not sent; Undo gives the text back.
    box = page.locator("#model-picker input")
    box.click()
    box.fill("nosuch:model")
    box.press("Enter")
    send(page, "meant for nobody")
    wait_until(lambda: "Not sent" in bot_text(page) and "nosuch" in bot_text(page), what="the refusal notice")
    page.get_by_label("Undo").last.click()
    wait_until(lambda: page.locator("#msg textarea").input_value() == "meant for nobody", what="the text back in the box")

    pick_model(page, "anthropic:echo")
    send(page, "after the refusals")
    wait_until(lambda: "You said: after the refusals" in bot_text(page), what="the reply after the refusals")
    sent = " ".join(str(r.json) for r in fake_server.requests if r.model == "echo")
    assert too_long not in sent and "meant for nobody" not in sent, "what is refused is never sent"

    def stored_users():
        _, msgs = db_rows(db)
        return [m["content"] for m in msgs if m["role"] == "user"]

    try:
        wait_until(lambda: stored_users() == ["a line that is kept", "after the refusals"], what="both turns stored")
    except AssertionError:
        raise AssertionError(f"stored: {db_rows(db)}") from None
    convs, _ = db_rows(db)
    assert len(convs) == 1, "one conversation: Undo of the refused message left the stored turn alone"
