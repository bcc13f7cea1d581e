"""The dashboard and batch tabs in a real browser: numbers after chatting, a batch run from an upload."""

from __future__ import annotations

import pytest

from tests.browser.test_chat_browser import pick_model, wait_until

pytestmark = pytest.mark.browser
# Started while the module before this one runs (tests/browser/conftest.py), with a database of its own.
APPS: dict[str, dict[str, str]] = {"server": {}}


def chat(page, ref, text, done_marker):
    pick_model(page, ref)
    page.locator("#msg textarea").fill(text)
    page.locator("#msg textarea").press("Enter")
    bots = page.locator("[data-testid='bot']")
    wait_until(lambda: done_marker in " ".join(bots.all_inner_texts()).lower(), what=f"reply from {ref}")
    # the reply is saved in the handler's finally, just after the last update
    page.wait_for_timeout(300)


@pytest.fixture(scope="module")
def server(request, apps):
    with apps.app(request.module, "server") as (proc, _db):
        yield proc


def test_dashboard_after_chatting_and_a_batch_run(server, page, artifacts, tmp_path):
    page.goto(server.url)
    page.wait_for_selector("#msg textarea")
    page.locator(".parley-muted", has_text="aved").first.wait_for()  # the owner is known

    chat(page, "openai:fast", "Hello there", "first token")
    chat(page, "openai:rate-200-tokens-60", "Tell me more", "first token")
    chat(page, "openai:fail-401-always", "This one fails", "⚠️")

    # Opening the tab loads it: no Refresh click needed.
    page.locator("#tab-dashboard-button, button[role='tab']:has-text('Dashboard')").first.click()
    table = page.locator("#dash-table")
    table.wait_for()
    wait_until(lambda: "fail-401-always" in table.inner_text(), what="dashboard table")
    text = table.inner_text()
    assert "fast" in text and "rate-200-tokens-60" in text
    assert "**3** replies" not in page.locator("#dash-summary").inner_text()
    summary = page.locator("#dash-summary").inner_text()
    assert "3 replies from 3 models" in summary and "1 failed" in summary
    # The plots are drawn (Vega renders into a canvas or an svg).
    page.locator("#dash-errors canvas, #dash-errors svg").first.wait_for()
    page.locator("#dash-activity canvas, #dash-activity svg").first.wait_for()
    page.wait_for_timeout(700)  # let the plots finish their transition
    page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)

    # Another period is one click; an empty period says so.
    page.locator("#dash-period label", has_text="Last hour").click()
    wait_until(lambda: "3 replies" in page.locator("#dash-summary").inner_text(), what="last hour")

    # Batch: upload, two models (one failing), run, see the summary and downloads.
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "q1", "prompt": "Name three primes."}\n{"id": "q2", "prompt": "Say hi in French."}\n'
                       '{"id": "q3", "prompt": "What is 2+2?", "reference": "4"}\n', encoding="utf-8")
    page.locator("button[role='tab']:has-text('Batch')").first.click()
    page.locator("#batch-file input[type=file]").set_input_files(str(prompts))
    models = page.locator("#batch-models input")
    models.click()
    for ref in ("openai:fast", "openai:fail-401-always"):
        models.fill(ref)
        models.press("Enter")
    models.press("Escape")
    page.locator("#batch-run").click()
    status = page.locator("#batch-status")
    try:
        wait_until(lambda: "Finished" in status.inner_text(), timeout=30, what="batch finished")
    except AssertionError:
        page.screenshot(path=str(artifacts / "batch-failure.png"), full_page=True)
        raise
    assert "6/6 done, 3 errors" in status.inner_text() or "9/9 done, 3 errors" in status.inner_text()
    summary_table = page.locator("#batch-summary").inner_text()
    assert "openai:fast" in summary_table and "openai:fail-401-always" in summary_table
    downloads = "".join(page.locator("#batch-downloads").inner_text().split())
    assert "batch-results.jsonl" in downloads and "batch-results.csv" in downloads
    # q3 has a reference: the scores (plot and table) show, for the model whose reply was scored.
    assert "openai:fast" in page.locator("#batch-scores-plot").inner_text()
    assert "openai:fast" in page.locator("#batch-score-table").inner_text()
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / "batch.png"), full_page=True)

    # Stop mid-run: the finished rows stay and are offered for download.
    models.click()
    models.fill("openai:slow")
    models.press("Enter")
    models.press("Escape")
    page.locator("#batch-run").click()
    wait_until(lambda: "Running" in status.inner_text(), what="second batch running")
    page.locator("#batch-stop").click()
    wait_until(lambda: "Stopped" in status.inner_text(), what="batch stopped")
    assert "were not run" in status.inner_text()
    assert "batch-results.jsonl" in "".join(page.locator("#batch-downloads").inner_text().split())
    assert page.locator("#batch-run").is_enabled()
