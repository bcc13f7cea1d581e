"""Issue 17's rough edges that only a browser shows: a user's message as typed (live, reopened, in a compare
pane), an error notice's folded title whole with its advice, the Title field after Delete, no Vega "Infinite
extent" warning for a chart with nothing to draw, and a dashboard of 18 models laid out full width."""

from __future__ import annotations

import re

import pytest
from sqlmodel import Session

from tests.browser.test_chat_browser import bot_text, db_rows, open_app, pick_model, send, wait_ready, wait_until

pytestmark = pytest.mark.browser
# Started while the module before this one runs (tests/browser/conftest.py), with a database of its own.
APPS: dict[str, dict[str, str]] = {"server": {}}

TYPED = "What is 2**10 + 17*3? Keep _this_ and <b>that</b> as typed."
SHOTS = "/tmp/shots"


@pytest.fixture(scope="module")
def server(request, apps):
    with apps.app(request.module, "server") as (proc, db):
        yield proc, db


def user_texts(page, within: str = "") -> list[str]:
    return page.locator(f"{within} [data-testid='user']".strip()).all_inner_texts()


def seed_models(db: str, owner: str, count: int) -> list[str]:
    """`count` models with long names, one reply each, for `owner` (the dashboard reads them from storage)."""
    import sqlalchemy as sa

    from core.store import start_turn
    from storage import repository as repo

    engine = sa.create_engine(db)
    refs = []
    try:
        with Session(engine) as session:
            for i in range(count):
                provider = ("openai", "anthropic", "gemini")[i % 3]
                name = f"a-rather-long-model-name-{i:02d}"
                refs.append(f"{provider}:{name}")
                ids = start_turn(session=session, owner=owner, conversation_id=None, history_user_texts=[],
                                 content=f"seed {i}", provider=provider, model=name, system_prompt="", params={})
                reason = ("stop", "length", "error", "content_filter")[i % 4]
                repo.finish_turn(session=session, owner=owner, message_id=ids.assistant_message_id, content="ok",
                                 finish_reason=reason, provider=provider, model=name, input_tokens=10,
                                 output_tokens=40 + i, ttft_ms=100 + 20 * i, duration_ms=900 + 30 * i,
                                 error="failed" if reason == "error" else None)
    finally:
        engine.dispose()
    return refs


def test_messages_notices_delete_and_charts(server, page):
    proc, db = server
    warnings: list[str] = []
    page.on("console", lambda m: warnings.append(m.text) if m.type in ("warning", "error") else None)
    open_app(page, proc.url)

    # A user's message shows as typed, not as markdown (nor as HTML).
    pick_model(page, "openai:fast")
    send(page, TYPED)
    wait_until(lambda: "lorem0" in bot_text(page), what="the reply")
    wait_until(lambda: user_texts(page) == [TYPED], what=f"the message as typed (shown: {user_texts(page)})")
    assert page.locator("[data-testid='user'] b:visible, [data-testid='user'] em:visible").count() == 0

    # A failed reply: the folded notice shows the vendor's whole sentence, bracket closed, and the advice.
    pick_model(page, "openai:error-after-3")
    send(page, "fail please")
    wait_until(lambda: "⚠️" in bot_text(page), what="the error notice")
    title = page.locator("[data-testid='bot'] .title", has_text="⚠️").last.inner_text()
    assert "Sorry about that!)" in title and "Press Retry to try again." in title, title
    page.screenshot(path=f"{SHOTS}/x3-chat-notice.png")

    # Reopened from storage (the address holds the conversation): still as typed.
    wait_until(lambda: "c=" in page.url, what="the conversation in the address")
    page.reload()
    wait_ready(page)
    wait_until(lambda: user_texts(page)[:1] == [TYPED], what=f"the reopened message as typed ({user_texts(page)})")

    # Delete clears the Title field with the chat.
    owner = db_rows(db)[0][0]["owner"]
    page.locator("#manage").get_by_text("Manage conversation").click()
    title_box = page.locator("#conv-title textarea, #conv-title input").first
    wait_until(lambda: title_box.input_value().startswith("What is 2**10"), what="the Title field naming the chat")
    page.locator("#delete").click()
    page.locator("#confirm-delete").click()
    wait_until(lambda: not db_rows(db)[0], what="the conversation deleted")
    wait_until(lambda: title_box.input_value() == "", what=f"the Title field cleared (it says {title_box.input_value()!r})")

    # Compare: the prompt as typed in every pane; no price for these models, so no cost chart and no Vega warning.
    page.get_by_role("tab", name=re.compile("Compare")).click()
    page.wait_for_selector("#cmp-msg textarea")
    for i, ref in enumerate(("openai:fast", "anthropic:fast")):
        box = page.locator(f"#cmp-model-{i} input")
        box.click()
        box.fill(ref)
        box.press("Enter")
        page.locator("#cmp-msg textarea").click()
    page.locator("#cmp-msg textarea").fill(TYPED)
    page.locator("#cmp-send").click()
    page.locator("#cmp-charts").wait_for(state="visible")
    wait_until(lambda: user_texts(page, "#cmp-chat-0") == [TYPED] and user_texts(page, "#cmp-chat-1") == [TYPED],
               what=f"the prompt as typed in both panes ({user_texts(page, '#cmp-chat-0')})")
    page.locator("#cmp-plot-ttft_ms canvas, #cmp-plot-ttft_ms svg").first.wait_for()
    assert not page.locator("#cmp-plot-cost").is_visible(), "a chart with nothing to draw is hidden"

    # The dashboard with 18 models: each chart has the full width, so names and legends have room.
    refs = seed_models(db, owner, 18)
    page.get_by_role("tab", name=re.compile("Dashboard")).click()
    table = page.locator("#dash-table")
    wait_until(lambda: refs[-1] in table.inner_text(), what="the 18 models in the table")
    for plot in ("#dash-errors", "#dash-ttft", "#dash-speed"):
        page.locator(f"{plot} canvas, {plot} svg").first.wait_for()
    page.wait_for_timeout(700)  # the plots' transition
    width = page.locator("#dash-results").bounding_box()["width"]
    for plot in ("#dash-errors", "#dash-ttft", "#dash-speed"):
        assert page.locator(plot).bounding_box()["width"] > 0.9 * width, f"{plot} is not full width"
    assert "Refused (%)" in table.inner_text() and "Truncated (%)" in table.inner_text()
    page.screenshot(path=f"{SHOTS}/x3-dashboard-18.png", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(500)
    page.screenshot(path=f"{SHOTS}/x3-dashboard-18-phone.png", full_page=True)

    infinite = [w for w in warnings if "Infinite extent" in w]
    assert not infinite, infinite
