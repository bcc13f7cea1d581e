"""The experiment file and the reproducibility card in a real browser: a Batch run offers the file, a tampered copy
is refused, the file opens read-only and a replay on the demo shows every output unchanged; a chat reply's card
opens from its metrics line (desktop and a 390×844 phone)."""

from __future__ import annotations

import json

import pytest

from compare.experiment import dumps, loads
from tests.browser.test_chat_browser import wait_until

pytestmark = pytest.mark.browser
APPS: dict[str, dict[str, str]] = {"server": {"DEFAULT_MODEL": "demo:parley-demo"}}
PROMPTS = ('{"id": "q1", "prompt": "What is 6 x 7? Answer with the number.", "reference": "42"}\n'
           '{"id": "q2", "prompt": "Say hello.", "system": "Be brief."}\n')


@pytest.fixture(scope="module")
def server(request, apps):
    with apps.app(request.module, "server") as (proc, db):
        yield proc


def open_batch_tab(page) -> None:
    tab = page.locator("button[role='tab']:has-text('Batch')")
    if tab.count() and tab.first.is_visible():
        tab.first.click()
    else:  # a phone: the tab is in the overflow menu
        page.get_by_role("button", name="More tabs").first.click()
        page.locator(".overflow-dropdown button", has_text="Batch").first.click()


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 900}, {"width": 390, "height": 844}], ids=["desktop", "phone"])
def test_batch_experiment_file_open_tampered_and_replay(server, browser, tmp_path, artifacts, viewport):
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.set_default_timeout(20_000)
    name = "phone" if viewport["width"] < 500 else "desktop"
    try:
        page.goto(server.url)
        page.locator("#msg textarea").wait_for()
        open_batch_tab(page)
        prompts = tmp_path / "prompts.jsonl"
        prompts.write_text(PROMPTS, encoding="utf-8")
        page.locator("#batch-file input[type=file]").set_input_files(str(prompts))
        models = page.locator("#batch-models input")
        models.click()
        models.fill("demo:parley-demo")
        models.press("Enter")
        models.press("Escape")
        page.locator("#batch-run").click()
        wait_until(lambda: "Finished" in page.locator("#batch-status").inner_text(), timeout=60, what="batch finished")
        assert "batch-experiment.json" in "".join(page.locator("#batch-downloads").inner_text().split())
        with page.expect_download() as info:
            page.locator("#batch-downloads a[href*='batch-experiment']").first.click()
        experiment = tmp_path / "experiment.json"
        info.value.save_as(experiment)
        doc = loads(experiment.read_bytes())
        assert [r["prompt_id"] for r in doc["results"]] == ["q1", "q2"] and doc["results"][0]["sdk_version"] == "demo"

        page.locator("#batch-experiment").get_by_text("Open an experiment file").click()
        tampered = tmp_path / "tampered.json"
        forged = json.loads(experiment.read_bytes())
        forged["results"][1]["text"] = "A forged answer."
        tampered.write_bytes(dumps(forged))
        page.locator("#batch-experiment-file input[type=file]").set_input_files(str(tampered))
        status = page.locator("#batch-experiment-status")
        wait_until(lambda: "does not match" in status.inner_text(), what="tampered file refused")
        assert "Nothing was loaded" in status.inner_text()
        assert not page.locator("#batch-experiment-replay").is_visible(), "nothing to replay"

        page.locator("#batch-experiment-file button[aria-label*='lear']").first.click()
        page.locator("#batch-experiment-file input[type=file]").set_input_files(str(experiment))
        wait_until(lambda: "Every hash checks out" in status.inner_text(), what="file opened")
        assert "Say hello." in page.locator("#batch-experiment-table").inner_text()
        page.locator("#batch-experiment-replay").click()
        wait_until(lambda: "Replayed" in status.inner_text(), timeout=60, what="replay finished")
        assert "2 unchanged, 0 changed" in status.inner_text()
        assert page.locator("#batch-experiment-diff").inner_text().count("= unchanged") == 2
        page.locator("#batch-experiment-diff").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts / f"experiment-replay-{name}.png"))
    finally:
        context.close()


def test_a_chat_reply_card_opens_from_its_metrics_line(server, page, artifacts):
    page.goto(server.url)
    page.locator("#msg textarea").fill("hello")
    page.locator("#msg textarea").press("Enter")
    bot = page.locator("[data-testid='bot']")
    wait_until(lambda: bot.filter(has_text="tok/s").count() > 0, timeout=60, what="reply finished")
    assert bot.get_by_text("SDK").count() == 0 or not bot.get_by_text("SDK").last.is_visible(), "folded by default"
    bot.get_by_text("first token").last.click()
    card = bot.get_by_text("SDK").last
    card.wait_for(state="visible")
    text = " ".join(bot.all_inner_texts())
    assert "Resolved version" in text and "demo/parley-demo" in text and "Parameters sent" in text
    page.screenshot(path=str(artifacts / "repro-card-chat.png"))
