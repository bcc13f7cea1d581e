"""HTML and script in user text and model output never run: in the chat, and in exports opened as files."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from storage import repository as repo
from tests.browser.test_chat_browser import bot_text, open_app, pick_model, send, wait_until

pytestmark = pytest.mark.browser
# Started while the module before this one runs (tests/browser/conftest.py), with a database of its own.
APPS: dict[str, dict[str, str]] = {"server": {}}

PAYLOAD = ('<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
           '<a href="javascript:window.__xss=3">click</a><svg onload="window.__xss=4"></svg> **bold**')


def no_script_ran(page) -> None:
    assert page.evaluate("window.__xss") is None, "a script from the message ran"
    assert page.eval_on_selector_all("[onerror], [onload]", "els => els.length") == 0
    assert page.eval_on_selector_all("a[href^='javascript:']", "els => els.length") == 0
    assert page.eval_on_selector_all("#chatbot script", "els => els.length") == 0


@pytest.fixture(scope="module")
def server(request, apps):
    with apps.app(request.module, "server") as (proc, db):
        yield proc, db


def test_html_in_messages_and_exports_is_inert(server, browser, tmp_path, artifacts):
    proc, db = server
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(20_000)
    open_app(page, proc.url)
    pick_model(page, "anthropic:echo")  # the model's output repeats the payload too
    send(page, PAYLOAD)
    wait_until(lambda: "You said" in bot_text(page) and "first token" in bot_text(page), what="echoed reply")
    page.wait_for_timeout(500)
    no_script_ran(page)
    assert "bold" in bot_text(page)
    page.reload()
    page.locator("#conv-list label").first.click()
    wait_until(lambda: "You said" in bot_text(page), what="reopened")
    page.wait_for_timeout(300)
    no_script_ran(page)
    page.screenshot(path=str(artifacts / "08-html-inert.png"))

    engine = sa.create_engine(db)
    with Session(engine) as s:
        owner = s.exec(sa.text("select owner from conversation")).scalar_one()
        md = repo.export_markdown(session=s, owner=owner)
        js = repo.export_json(session=s, owner=owner)
    engine.dispose()
    assert "<script>" not in md and "<img" not in md, "the Markdown export escapes HTML"
    from markdown_it import MarkdownIt

    files = {
        "export.md": md,
        "export.json": js,
        # what a Markdown viewer would show: the export rendered to HTML
        "export.html": "<html><body>" + MarkdownIt("commonmark", {"html": True}).render(md) + "</body></html>",
    }
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        page.goto(path.as_uri())
        page.wait_for_timeout(300)
        assert page.evaluate("window.__xss") is None, f"a script ran when {name} was opened"
        assert page.eval_on_selector_all("[onerror], [onload], script", "els => els.length") == 0, name
    ctx.close()
