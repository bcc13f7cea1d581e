"""Compare mode in a real browser: a blind run leaks no model name over the wire, a vote reveals and stores it;
with tools on, a pane shows its tool calls."""

from __future__ import annotations

import json
import re
import time

import pytest
import sqlalchemy as sa

from tests.browser.test_chat_browser import wait_until
from tests.fakes import Scenario

pytestmark = pytest.mark.browser
# Started while the module before this one runs (tests/browser/conftest.py), with a database of its own.
APPS: dict[str, dict[str, str]] = {"server": {}}

MODEL_A = "openai:gpt-5-mini"
MODEL_B = "anthropic:claude-sonnet-4-6"
# Every spelling that would give a pane away: refs, model ids, provider names and labels.
SECRETS = ["gpt-5-mini", "claude-sonnet-4-6", "openai", "anthropic", "claude", "sonnet", "gpt-5"]

# Records every byte the page receives through fetch (Gradio's client streams SSE with fetch) and
# EventSource, so the test sees the raw data and not only what is drawn.
CAPTURE = """
window.__rx = [];
const origFetch = window.fetch;
window.fetch = async (...args) => {
  const resp = await origFetch(...args);
  try {
    const url = typeof args[0] === 'string' ? args[0] : (args[0] && args[0].url) || '';
    const copy = resp.clone();
    (async () => {
      const reader = copy.body.getReader();
      const dec = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        window.__rx.push(url + ' ' + dec.decode(value, { stream: true }));
      }
    })();
  } catch (e) {}
  return resp;
};
const OrigES = window.EventSource;
if (OrigES) {
  window.EventSource = function (url, opts) {
    const es = new OrigES(url, opts);
    es.addEventListener('message', (e) => window.__rx.push(url + ' ' + e.data));
    return es;
  };
  window.EventSource.prototype = OrigES.prototype;
}
"""


@pytest.fixture(scope="module")
def server(request, apps, fake_server):
    poem = "Autumn wind rises; the lantern sways above a sleeping harbor, and gulls drift home through amber light. "
    prose = "A short answer: the harbor sleeps, the wind turns cold, and the boats come in before the evening tide. "
    fake_server.set_scenario("gpt-5-mini", Scenario(text=poem * 2, rate=60))
    fake_server.set_scenario("claude-sonnet-4-6", Scenario(text=prose * 2, rate=45))
    with apps.app(request.module, "server") as (proc, db):
        yield proc, db


def pick(page, selector: str, value: str) -> None:
    box = page.locator(f"{selector} input")
    box.click()
    box.fill(value)
    box.press("Enter")
    page.locator("#cmp-msg textarea").click()


def received(page) -> str:
    return "\n".join(page.evaluate("window.__rx"))


def events_settled(page) -> bool:
    """Every queue event the page has started (its load events, the pickers' change events) has completed.

    The model picker's load event answers with the whole model catalogue once the app has warmed its SDK
    clients (seconds after a cold start): the capture must be cleared after it, not after a fixed pause.
    """
    streams: dict[str, str] = {}  # each response's chunks joined again: a message may span two reads
    for entry in page.evaluate("window.__rx"):
        url, _, chunk = entry.partition(" ")
        streams[url] = streams.get(url, "") + chunk
    joins = "".join(text for url, text in streams.items() if "/queue/join" in url)
    started = re.findall(r'"event_id":\s*"(\w+)"', joins)
    done = set(re.findall(r'"msg":\s*"process_completed",\s*"event_id":\s*"(\w+)"', "".join(streams.values())))
    return bool(started) and all(e in done for e in started)


def test_blind_vote_hides_names_on_the_wire_then_reveals_and_stores(server, page, artifacts):
    proc, db = server
    page.add_init_script(CAPTURE)
    page.goto(proc.url)
    page.get_by_role("tab", name=re.compile("Compare")).click()
    page.wait_for_selector("#cmp-msg textarea")
    pick(page, "#cmp-model-0", MODEL_A)
    pick(page, "#cmp-model-1", MODEL_B)
    page.locator("#cmp-blind input[type=checkbox]").check()
    wait_until(lambda: events_settled(page), what="the page's load and change events to complete")
    page.evaluate("window.__rx = []")

    page.locator("#cmp-msg textarea").fill("Write two sentences about a harbor at dusk.")
    page.locator("#cmp-send").click()
    vote = page.locator("#cmp-vote-0")
    vote.wait_for(state="visible", timeout=20_000)
    panes = page.locator("#cmp-pane-0, #cmp-pane-1")
    wait_until(lambda: "Autumn" in page.locator("#cmp-pane-0, #cmp-pane-1").all_inner_texts().__str__(), what="replies")
    page.screenshot(path=str(artifacts / "compare-blind-before-vote.png"), full_page=False)

    wire = received(page)
    assert "Autumn wind" in wire and "harbor sleeps" in wire, "the capture saw the streamed replies"
    assert "process_generating" in wire or "process_completed" in wire
    lowered = wire.lower()
    for secret in SECRETS:
        assert secret not in lowered, f"{secret!r} was sent to the browser before the vote"
    shown = " ".join(panes.all_inner_texts() + [page.locator("#cmp-status").inner_text(), page.locator("#cmp-vote").inner_text()])
    assert "Model A" in shown and "Model B" in shown
    for secret in SECRETS:
        assert secret not in shown.lower()

    vote.click()  # "A is better"
    page.wait_for_function("document.querySelector('#cmp-status').innerText.includes('Vote saved')")
    status = page.locator("#cmp-status").inner_text()
    headers = page.locator("#cmp-header-0").inner_text() + " " + page.locator("#cmp-header-1").inner_text()
    assert "gpt-5-mini" in headers and "claude-sonnet-4-6" in headers, headers
    page.locator("#cmp-charts").wait_for(state="visible")
    time.sleep(0.8)  # let the charts draw
    page.screenshot(path=str(artifacts / "compare-after-vote.png"), full_page=True)

    engine = sa.create_engine(db)
    try:
        with engine.connect() as c:
            rows = c.execute(sa.text(
                "select v.verdict, v.winner_slot, m.provider || ':' || m.model as ref, p.slot, cmp.blind "
                "from comparison_vote v join comparison cmp on cmp.id = v.comparison_id "
                "join comparison_pane p on p.comparison_id = v.comparison_id join message m on m.id = p.message_id "
                "order by p.slot")).mappings().all()  # fmt: skip
            kinds = c.execute(sa.text("select kind, count(*) from conversation group by kind")).all()
    finally:
        engine.dispose()
    assert {r["ref"] for r in rows} == {MODEL_A, MODEL_B}
    assert all(r["verdict"] == "slot" and r["winner_slot"] == 0 and r["blind"] for r in rows)
    winner = next(r["ref"] for r in rows if r["slot"] == 0)
    assert winner.split(":", 1)[1] in status, "the status names the model that won"
    assert dict(kinds) == {"compare_pane": 2}

    page.get_by_role("tab", name=re.compile("Leaderboard")).click()
    page.wait_for_function("document.querySelector('#cmp-board-plot') && document.querySelector('#cmp-board-plot').innerText.includes('#1')")
    board = page.locator("#cmp-board-table").inner_text()
    assert winner in board
    time.sleep(0.5)
    page.screenshot(path=str(artifacts / "compare-leaderboard.png"), full_page=True)


def test_three_panes_stream_live_one_fails_and_stop_keeps_every_pane(server, page, artifacts, fake_server):
    proc, _ = server
    # 40 s streams: Stop comes while they stream even when a loaded machine takes seconds between the steps.
    fake_server.set_scenario("gemini-2.5-flash-lite", Scenario(tokens=400, rate=10))
    page.goto(proc.url)
    page.get_by_role("tab", name=re.compile("Compare")).click()
    page.wait_for_selector("#cmp-msg textarea")
    page.locator("#cmp-count label", has_text="3").click()
    page.locator("#cmp-model-2").wait_for(state="visible")
    pick(page, "#cmp-model-0", "openai:rate-10-tokens-400")
    pick(page, "#cmp-model-1", "anthropic:drop-after-5")
    pick(page, "#cmp-model-2", "gemini:gemini-2.5-flash-lite")
    page.locator("#cmp-temp-2 input").fill("0.3")
    page.locator("#cmp-temp-2 input").press("Enter")
    page.locator("#cmp-msg textarea").fill("Tell me everything about lighthouses.")
    page.locator("#cmp-send").click()

    # Every comparison puts its models in random panes: find each model's pane by its header.
    slot = {}
    for model in ("rate-10-tokens-400", "drop-after-5", "gemini-2.5-flash-lite"):
        wait_until(lambda m=model: any(m in page.locator(f"#cmp-header-{i}").inner_text() for i in range(3)),
                   what=f"{model}'s pane header")
        slot[model] = next(i for i in range(3) if model in page.locator(f"#cmp-header-{i}").inner_text())
    good, bad, cool = slot["rate-10-tokens-400"], slot["drop-after-5"], slot["gemini-2.5-flash-lite"]
    # Live: the good panes stream while the failing one already shows its error.
    wait_until(lambda: "consectetur5" in page.locator(f"#cmp-chat-{good}").inner_text(), what="the good pane streaming")
    wait_until(lambda: "cut off" in page.locator(f"#cmp-chat-{bad}").inner_text().lower(), what="the failing pane's error")
    assert "streaming" in page.locator(f"#cmp-metrics-{good}").inner_text().lower()
    page.screenshot(path=str(artifacts / "compare-three-panes-live.png"), full_page=True)

    # Escape stops a comparison as it stops a chat reply (it did nothing in the Compare tab).
    page.keyboard.press("Escape")  # the focus is still on Send
    page.wait_for_function("document.querySelector('#cmp-status').innerText.includes('Stopped')")
    wait_until(lambda: "Stopped" in page.locator(f"#cmp-chat-{good}").inner_text(), what="the good pane marked stopped")
    for i in (good, cool):
        text = page.locator(f"#cmp-chat-{i}").inner_text()
        assert "lorem0" in text and "Stopped" in text and "do399" not in text  # the stream's last word: not reached
    assert "cancelled" in page.locator(f"#cmp-metrics-{good}").inner_text()
    assert "temperature 0.3" in page.locator(f"#cmp-header-{cool}").inner_text()
    page.locator("#cmp-vote-0").wait_for(state="visible")
    records = fake_server.stream_log
    wait_until(lambda: any(r.model == "rate-10-tokens-400" and r.client_closed for r in records), what="stream closed")


def test_tools_switch_lets_a_pane_call_a_tool_and_shows_the_block(server, page, artifacts, fake_server):
    proc, db = server
    fake_server.set_scenario("calc-compare", Scenario(
        tool_calls=[{"name": "calculator", "arguments": {"expression": "6*7+0.5"}}],
        then=Scenario(text="About forty-two and a half.", tokens=6),
    ))  # fmt: skip
    page.goto(proc.url)
    page.get_by_role("tab", name=re.compile("Compare")).click()
    page.wait_for_selector("#cmp-msg textarea")
    assert "the others answer without" in page.locator("#cmp-tools").inner_text()
    pick(page, "#cmp-model-0", "openai:calc-compare")
    pick(page, "#cmp-model-1", "demo:parley-demo")
    page.locator("#cmp-tools input[type=checkbox]").check()
    page.locator("#cmp-msg textarea").fill("What is 6 times 7, plus a half?")
    page.locator("#cmp-send").click()

    # Every comparison puts its models in random panes: find the tool model's pane.
    answer = "About forty-two and a half."
    wait_until(lambda: any(answer in page.locator(f"#cmp-chat-{i}").inner_text() for i in (0, 1)),
               what="the answer after the tool")
    tool_i = 0 if answer in page.locator("#cmp-chat-0").inner_text() else 1
    demo_i = 1 - tool_i
    pane = page.locator(f"#cmp-chat-{tool_i}")
    wait_until(lambda: "offline demo model" in page.locator(f"#cmp-chat-{demo_i}").inner_text(), what="the demo pane's answer")
    assert "🛠 calculator" in pane.inner_text()
    assert "calculator" not in page.locator(f"#cmp-chat-{demo_i}").inner_text(), "the demo model cannot call tools"
    page.locator("#cmp-vote-0").wait_for(state="visible")
    assert page.locator(f"#cmp-header-{tool_i}").inner_text().endswith("tools")
    assert "no tools (not supported)" in page.locator(f"#cmp-header-{demo_i}").inner_text()
    # The block is folded; it opens to show what the tool was asked and what it returned.
    assert "42.5" not in pane.inner_text()
    pane.get_by_text("🛠 calculator").first.click()
    wait_until(lambda: "42.5" in pane.inner_text() and "6*7+0.5" in pane.inner_text(), what="the tool block's body")
    time.sleep(0.3)  # let it draw
    page.screenshot(path=str(artifacts / "compare-tools.png"), full_page=False)

    engine = sa.create_engine(db)
    try:
        with engine.connect() as c:
            stored = c.execute(sa.text("select tool_calls from message where model = 'calc-compare'")).scalars().all()
    finally:
        engine.dispose()
    [calls] = [json.loads(s) if isinstance(s, str) else s for s in stored]
    assert [(t["name"], t["result"]) for t in calls] == [("calculator", "42.5")]
