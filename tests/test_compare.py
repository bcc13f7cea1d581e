"""Compare mode against the fake provider servers: concurrency, isolation, blind mode, votes,
leaderboard scoping, exports, prices, tools and the /compare API."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from contextlib import aclosing
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd
import pytest
import sqlalchemy as sa
from gradio_client import Client
from gradio_client.exceptions import AppError
from sqlmodel import Session

import core.compare
from chat.registry import Registry, Settings
from chat.tools import Toolbox, builtin_tools, tool
from core.compare_export import CSV_COLUMNS
from core.config import AppConfig
from core.services import Services
from storage import repository as repo
from storage.models import Conversation
from tests.apphelpers import app_env, in_process_app
from tests.fakes import Scenario
from ui.compare.tab import build_compare_tab
from ui.context import TabContext

FAST3 = ["openai:rate-20-tokens-20", "anthropic:rate-20-tokens-20", "gemini:rate-20-tokens-20"]
CALC = [{"name": "calculator", "arguments": {"expression": "6*7"}}]
NO_TOOLS = "demo:parley-demo"  # the offline demo model does not support tools


@pytest.fixture(scope="module")
def app(fake_server, tmp_path_factory):
    db = tmp_path_factory.mktemp("comparedb") / "parley.db"
    with in_process_app(app_env(fake_server, f"sqlite:///{db}")) as (url, services):
        assert services.warmed.wait(30), "SDK clients are built before anything is timed"
        client = Client(url, verbose=False)
        # One call through every provider first: the first request of an SDK client is slow.
        client.predict(message="warm up", models=["openai:fast", "anthropic:fast", "gemini:fast"], api_name="/compare")
        yield url, services


@pytest.fixture(scope="module")
def loop():
    """One event loop for the handler tests: SDK clients stay bound to the loop they first ran on."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def tab(app, fake_server):
    """The compare tab on services of its own (same database as the app), with handles on its handlers."""
    _, app_services = app
    env = app_env(fake_server, "unused")
    services = Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env)), app_services.engine)
    with gr.Blocks():
        ctx = TabContext(
            services=services, owner=gr.State(None), model=gr.Dropdown(), system_prompt=gr.Textbox(),
            params=[gr.Slider(0, 2, value=1.0), gr.Slider(0, 1, value=1.0), gr.Slider(1, 65536, value=512),
                    gr.Number(value=None), gr.Radio(["default", "low"], value="default")],
            model_choices=[("Fast", "openai:fast")],
        )  # fmt: skip
        ui = build_compare_tab(ctx)
    return ui


@pytest.fixture(autouse=True)
def panes_in_given_order(monkeypatch):
    """These tests read panes by the order they gave the models in; the random pane order every run gets
    is tested in tests/core/test_comparisons.py."""
    monkeypatch.setattr(core.compare, "shuffle", lambda order: None)


def request(user: str) -> SimpleNamespace:
    return SimpleNamespace(username=user, session_hash=f"s-{user}")


def run_data(ui, message, models, *, blind=False, session=None, temperatures=(), system_prompts=(), prices=None,
             tools=False):
    data = {ui.message: message, ui.pane_count: len(models), ui.blind: blind, ui.session: session if session is not None else {},
            ui.prices_state: prices, ui.ctx.owner: None, ui.ctx.system_prompt: "", ui.tools: tools}  # fmt: skip
    for c, v in zip(ui.ctx.params, [1.0, 1.0, 512, None, "default"]):
        data[c] = v
    for i in range(4):
        data[ui.models[i]] = models[i] if i < len(models) else ""
        data[ui.temperatures[i]] = temperatures[i] if i < len(temperatures) else ""
        data[ui.system_prompts[i]] = system_prompts[i] if i < len(system_prompts) else ""
    return data


def wire(update: dict) -> str:
    """An update as the browser gets it: each value through its component's postprocess, as JSON.

    gr.State values never leave the server (Gradio sends null for them), so they are left out.
    """
    out = {}
    for component, value in update.items():
        if isinstance(component, gr.State):
            continue
        if not (isinstance(value, dict) and value.get("__type__") == "update"):
            value = component.postprocess(value)
            value = value.model_dump() if hasattr(value, "model_dump") else value
        out[str(component.elem_id or component._id)] = value
    return json.dumps(out, default=str)


def collect(loop, ui, data, user):
    async def go():
        updates = []
        async with aclosing(ui.handlers.run(data, request(user))) as gen:
            async for update in gen:
                updates.append(update)
        return updates

    return loop.run_until_complete(go())


# -- the /compare API ------------------------------------------------------------------------------


def open_at_once(fake_server, since: float, models: set[str]) -> int:
    """The most of these models' streams the fake had open at once (started after `since`), once all have ended.

    Read from the fake's own log of when each stream was open: whether panes ran at once, with no
    timing assertion. The fake notes an end just after its last bytes, so wait briefly for the ends.
    """
    records: list = []
    for _ in range(200):
        records = [r for r in fake_server.stream_log if r.started >= since and r.model in models]
        if records and all(r.ended is not None for r in records):
            break
        time.sleep(0.01)
    assert records and all(r.ended is not None for r in records), records
    edges = sorted([(r.started, 1) for r in records] + [(r.ended, -1) for r in records])
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)
    return peak


def test_api_panes_stream_in_parallel(app, fake_server):
    url, _ = app
    client = Client(url, verbose=False)
    since = time.monotonic()
    out = client.predict(message="Count for me", models=FAST3, api_name="/compare")
    assert [o["model"] for o in out] == FAST3
    assert sorted(o["position"] for o in out) == [0, 1, 2], "each item says which (randomly given) pane it had"
    for o in out:
        assert o["finish_reason"] == "stop" and o["error"] is None
        assert o["text"].split()[-1] == "enim19" and o["output_tokens"] == 20
        assert o["duration_ms"] >= 900, "each pane takes about a second"
        assert o["ttft_ms"] is not None and o["tokens_per_second"] > 10
        assert set(o) == {"model", "text", "ttft_ms", "tokens_per_second", "output_tokens", "input_tokens",
                          "reasoning_tokens", "cached_input_tokens", "cache_write_tokens", "usage_estimated",
                          "duration_ms", "finish_reason", "error", "cost", "tools", "position", "comparison_id"}  # fmt: skip
        assert o["usage_estimated"] is False  # the fake server reports usage
        assert o["tools"] == []
    # The three providers' streams were all open at once (run one after another, at most one would be).
    assert open_at_once(fake_server, since, {"rate-20-tokens-20"}) == 3


def test_api_failing_pane_does_not_block_or_break_the_other(app, fake_server):
    url, _ = app
    client = Client(url, verbose=False)
    # The failing stream drops after 5 words at 20 a second, while the other takes a second for its 20: run
    # side by side their streams overlap, one after the other they cannot (from the fake's log, not a wall-time
    # limit on a shared machine: a drop within milliseconds ended before the other pane's stream began).
    fake_server.set_scenario("slow-drop-after-5", Scenario(rate=20, tokens=20, drop_after=5))
    since = time.monotonic()
    bad, good = client.predict(message="go", models=["openai:slow-drop-after-5", "gemini:rate-20-tokens-20"], api_name="/compare")
    assert open_at_once(fake_server, since, {"slow-drop-after-5", "rate-20-tokens-20"}) == 2
    assert bad["finish_reason"] == "error" and bad["error"] and len(bad["text"].split()) == 5
    assert good["finish_reason"] == "stop" and good["error"] is None and len(good["text"].split()) == 20


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"message": "hi", "models": ["openai:fast"]}, "2 to 4 models"),
        ({"message": "hi", "models": ["openai:fast"] * 5}, "2 to 4 models"),
        # One model not set up fails its own pane (tests/core/test_rough_edges_core.py); all of them: nothing runs.
        ({"message": "hi", "models": ["nosuch:model", "other:model"]}, "Unknown provider"),
        ({"message": "   ", "models": ["openai:fast", "gemini:fast"]}, "empty prompt"),
    ],
)
def test_api_refuses_bad_requests_with_a_clear_error(app, fake_server, kwargs, words):
    url, _ = app
    before = len(fake_server.requests)
    with pytest.raises(AppError, match=words):
        Client(url, verbose=False).predict(**kwargs, api_name="/compare")
    assert len(fake_server.requests) == before, "nothing was sent to a provider"


def test_api_is_listed_with_its_parameters(app):
    url, _ = app
    params = Client(url, verbose=False).view_api(return_format="dict", print_info=False)["named_endpoints"]["/compare"]["parameters"]
    assert [p["parameter_name"] for p in params][:2] == ["message", "models"]
    tools = next(p for p in params if p["parameter_name"] == "tools")
    assert tools["parameter_has_default"] and tools["parameter_default"] is False


def test_api_runs_are_saved_as_hidden_panes_that_stats_count(app):
    url, services = app
    Client(url, verbose=False).predict(message="stats please", models=["openai:tokens-7", "gemini:tokens-9"], api_name="/compare")
    with services.engine.connect() as c:
        convs = c.execute(sa.select(Conversation.__table__).where(Conversation.__table__.c.title == "stats please")).mappings().all()
    assert len(convs) == 2 and {c["kind"] for c in convs} == {"compare_pane"}
    owner = convs[0]["owner"]
    with Session(services.engine) as s:
        assert all(c.title != "stats please" for c in repo.list_conversations(session=s, owner=owner))
        stats = {(x.provider, x.model): x for x in repo.usage_stats(session=s, owner=owner)}
        assert stats[("openai", "tokens-7")].output_tokens == 7 and stats[("gemini", "tokens-9")].count == 1
        [run] = repo.export_comparisons(session=s, owner=owner)
    # The models take random panes (slots): compare as a set.
    assert run.prompt == "stats please" and sorted(p.message.output_tokens for p in run.panes) == [7, 9]


# -- the tab's handlers ----------------------------------------------------------------------------


def test_blind_run_sends_no_name_until_the_vote_then_reveals_and_stores_it(tab, app, loop):
    _, services = app
    models = ["openai:rate-60-tokens-30", "gemini:error-after-5"]
    session: dict = {}
    updates = collect(loop, tab, run_data(tab, "Blind question", models, blind=True, session=session), "blinder")
    assert len(updates) >= 3, "the panes streamed in several updates"
    sent = [wire(u) for u in updates]
    for text in sent:
        for secret in ("openai", "gemini", "rate-60-tokens-30", "error-after-5", "google", "OpenAI", "Gemini"):
            assert secret.lower() not in text.lower(), f"{secret} reached the browser before the vote"
    final = updates[-1]
    assert final[tab.headers[0]].startswith("### Model A") and final[tab.vote_row]["visible"] is True
    # The failing pane shows its (redacted) error; the good pane finished.
    bubbles = final[tab.chatbots[0]] + final[tab.chatbots[1]]
    assert any((b.get("metadata") or {}).get("title", "").startswith("⚠️") for b in bubbles)
    assert sum(1 for b in bubbles if "lorem0" in b["content"] and "consectetur5" in b["content"]) >= 1
    assert "after the vote" in final[tab.metrics[0]], "costs would give the model away"

    out = loop.run_until_complete(tab.handlers.vote("tie", session, None, request("blinder")))
    revealed = wire(out)
    assert "rate-60-tokens-30" in revealed and "error-after-5" in revealed
    assert "Vote saved" in out[tab.status] and out[tab.vote_row]["visible"] is False
    with Session(services.engine) as s:
        [record] = repo.comparison_votes(session=s, owner="user:blinder")
    assert record.verdict == "tie" and record.blind and sorted(record.models) == sorted(models)
    assert record.models == session["refs"], "the stored slots are the shuffled display order"
    again = loop.run_until_complete(tab.handlers.vote("0", session, None, request("blinder")))
    assert "no finished comparison" in again[tab.status]


def test_follow_up_continues_each_pane_and_a_changed_setup_starts_over(tab, fake_server, loop):
    session: dict = {}
    models = ["anthropic:echo", "openai:echo"]
    collect(loop, tab, run_data(tab, "first words", models, session=session), "follower")
    first_ids = [p["conversation_id"] for p in session["panes"]]
    collect(loop, tab, run_data(tab, "second words", models, session=session), "follower")
    assert [p["conversation_id"] for p in session["panes"]] == first_ids
    last = [r for r in fake_server.requests if r.model == "echo" and r.provider == "openai"][-1]
    assert [m["content"] for m in last.json["messages"]] == ["first words", "You said: first words", "second words"]
    # Another temperature in pane 2: a sweep, and a new comparison with new pane conversations.
    collect(loop, tab, run_data(tab, "third", models, session=session, temperatures=["", "0.3"]), "follower")
    assert not set(p["conversation_id"] for p in session["panes"]) & set(first_ids)
    sent = [r for r in fake_server.requests if r.model == "echo" and r.provider == "openai"][-1]
    assert sent.json["temperature"] == 0.3 and len(sent.json["messages"]) == 1


def test_stop_keeps_and_saves_every_panes_partial_text(tab, app, loop):
    _, services = app
    session: dict = {}
    data = run_data(tab, "long answers", ["openai:slow", "anthropic:slow"], session=session)

    async def stream_then_stop():
        async with aclosing(tab.handlers.run(data, request("stopper"))) as gen:
            started = time.monotonic()
            async for _ in gen:
                if time.monotonic() - started > 0.6:
                    break  # what Gradio does on Stop: the generator is closed mid-stream

    loop.run_until_complete(stream_then_stop())
    shown = loop.run_until_complete(tab.handlers.stop(session, None, request("stopper")))
    assert "Stopped" in shown[tab.status] and session["running"] is False
    with Session(services.engine) as s:
        [run] = repo.export_comparisons(session=s, owner="user:stopper")
    for pane in run.panes:
        assert pane.message.finish_reason == "cancelled"
        assert 3 <= len(pane.message.content.split()) < 40


def test_leaderboard_is_owner_scoped_unless_shared(tab, app, loop):
    services = tab.handlers.s
    for user, winner in (("ann", 0), ("ann", 0), ("ben", 1)):
        session: dict = {}
        collect(loop, tab, run_data(tab, "rate us", ["openai:tokens-3", "gemini:tokens-4"], session=session), user)
        # Every run puts its models in random panes: vote for the pane that holds model `winner`.
        loop.run_until_complete(tab.handlers.vote(str(session["order"].index(winner)), session, None, request(user)))
    mine = loop.run_until_complete(tab.handlers.board(False, False, None, None, None, request("ann")))
    table = mine[tab.board_table]
    assert list(table["model"]) == ["openai:tokens-3", "gemini:tokens-4"]
    assert list(table["votes"]) == [2, 2] and "2** votes (your votes)" in mine[tab.board_note]
    assert "<svg" in mine[tab.board_plot] and "100%" in mine[tab.board_matrix]
    # The pair pickers offer the rated models; picking two adds their votes-to-separate line.
    assert mine[tab.pair_a]["choices"] == ["openai:tokens-3", "gemini:tokens-4"] and "Picked pair" not in mine[tab.board_note]
    picked = loop.run_until_complete(tab.handlers.board(False, False, "gemini:tokens-4", "openai:tokens-3", None, request("ann")))
    assert "**Picked pair** gemini:tokens-4 vs openai:tokens-3" in picked[tab.board_note]
    assert picked[tab.pair_a]["value"] == "gemini:tokens-4" and picked[tab.pair_b]["value"] == "openai:tokens-3"
    same = loop.run_until_complete(tab.handlers.board(False, False, "gemini:tokens-4", "gemini:tokens-4", None, request("ann")))
    assert "Picked pair" not in same[tab.board_note] and "two different models" in same[tab.board_note]
    gone = loop.run_until_complete(tab.handlers.board(False, False, "openai:nobody", "openai:tokens-3", None, request("ann")))
    assert gone[tab.pair_a]["value"] is None
    services.config.shared_leaderboard = True
    try:
        everyone = loop.run_until_complete(tab.handlers.board(False, False, None, None, None, request("ann")))
    finally:
        services.config.shared_leaderboard = False
    assert "everyone" in everyone[tab.board_note]
    shared = everyone[tab.board_table].set_index("model")["votes"]  # other tests' voters are in there too
    assert shared["openai:tokens-3"] == 3 and shared["gemini:tokens-4"] == 3


def test_exports_have_the_documented_columns(tab, loop):
    session: dict = {}
    collect(loop, tab, run_data(tab, "=export me", ["openai:tokens-5", "anthropic:tokens-6"], session=session), "exporter")
    loop.run_until_complete(tab.handlers.vote("1", session, None, request("exporter")))
    csv_out = loop.run_until_complete(tab.handlers.export("csv", None, request("exporter")))
    rows = list(csv.reader(io.StringIO(Path(csv_out[tab.download]["value"]).read_text())))
    assert rows[0] == CSV_COLUMNS
    body = [dict(zip(rows[0], r)) for r in rows[1:]]
    assert [r["model"] for r in body] == ["openai:tokens-5", "anthropic:tokens-6"]
    assert [r["won"] for r in body] == ["false", "true"] and body[0]["winner_model"] == "anthropic:tokens-6"
    assert body[0]["prompt"] == "'=export me", "formula-like cells are defused"
    assert body[1]["output_tokens"] == "6" and body[1]["finish_reason"] == "stop"

    jsonl_out = loop.run_until_complete(tab.handlers.export("jsonl", None, request("exporter")))
    [record] = [json.loads(line) for line in Path(jsonl_out[tab.download]["value"]).read_text().splitlines()]
    assert set(record) == {"comparison_id", "created_at", "prompt", "blind", "vote", "panes"}
    assert record["vote"]["winner_model"] == "anthropic:tokens-6" and record["prompt"] == "=export me"
    assert set(record["panes"][0]) >= {"slot", "label", "model", "text", "ttft_ms", "tokens_per_second", "cost_usd", "finish_reason"}
    other = loop.run_until_complete(tab.handlers.export("jsonl", None, request("nobody")))
    assert Path(other[tab.download]["value"]).read_text() == ""


def test_edited_prices_are_validated_and_used(tab, loop):
    bad = pd.DataFrame([{"model": "openai:*", "input_per_m": -1, "output_per_m": 2, "note": ""}])
    out = tab.handlers.apply_prices(bad, None, request("payer"))
    assert "negative" in out[tab.price_status] and tab.prices_state not in out
    good = pd.DataFrame([{"model": "openai:*", "input_per_m": 1000, "output_per_m": 2000, "note": "test"}])
    out = tab.handlers.apply_prices(good, None, request("payer"))
    rows = out[tab.prices_state]
    session: dict = {}
    updates = collect(loop, tab, run_data(tab, "price me", ["openai:tokens-10", "gemini:tokens-10"], session=session,
                                          prices=rows), "payer")  # fmt: skip
    openai_cost, gemini_cost = (m.cost for m in session["metrics"])
    assert openai_cost == pytest.approx((session["metrics"][0].input_tokens * 1000 + 10 * 2000) / 1e6)
    assert gemini_cost is None and "no price" in updates[-1][tab.metrics[1]]


# -- tools -----------------------------------------------------------------------------------------


def tool_blocks(bubbles) -> list[dict]:
    return [b for b in bubbles if (b.get("metadata") or {}).get("title", "").startswith("🛠")]


def requests_of(fake_server, model: str, since: int) -> list:
    return [r for r in fake_server.requests[since:] if r.model == model]


def stored_panes(services, owner: str, prompt: str) -> list:
    with Session(services.engine) as s:
        [run] = [r for r in repo.export_comparisons(session=s, owner=owner) if r.prompt == prompt]
    return run.panes


def test_tools_run_in_the_panes_whose_model_supports_them_and_are_shown_and_stored(tab, app, fake_server, loop):
    _, services = app
    fake_server.set_scenario("cmp-calc", Scenario(tool_calls=CALC, then=Scenario(text="The answer is 42.", tokens=4)))
    fake_server.set_scenario("cmp-plain", Scenario(text="No tool needed for this one.", tokens=6))
    models = ["openai:cmp-calc", "gemini:cmp-plain", NO_TOOLS]
    before = len(fake_server.requests)
    session: dict = {}
    updates = collect(loop, tab, run_data(tab, "what is 6 times 7?", models, session=session, tools=True), "toolsy")
    final = updates[-1]

    calc, plain, demo = (final[tab.chatbots[i]] for i in range(3))
    [block] = tool_blocks(calc)
    assert block["metadata"]["title"] == "🛠 calculator" and block["metadata"]["status"] == "done"
    assert "6*7" in block["content"] and "**Result**\n```\n42\n```" in block["content"]
    assert any(b["content"] == "The answer is 42." for b in calc)
    assert tool_blocks(plain) == [] and tool_blocks(demo) == []
    assert "offline demo model" in " ".join(b["content"] for b in demo), "the pane without tool support still answered"
    assert "✅ stop" in final[tab.metrics[0]]
    assert [d.split(" · ")[-1] for d in session["details"]] == ["tools", "tools", "no tools (not supported)"]

    # The calculator's result went back to the model; the plain pane was offered the tools but did not call one.
    first, second = requests_of(fake_server, "cmp-calc", before)
    assert [t["function"]["name"] for t in first.json["tools"]] == ["calculator", "current_time", "search_conversations"]
    assert any(m.get("role") == "tool" and m["content"] == "42" for m in second.json["messages"])
    [plain_request] = requests_of(fake_server, "cmp-plain", before)
    assert "calculator" in json.dumps(plain_request.json.get("tools"))

    calc_pane, plain_pane, demo_pane = stored_panes(services, "user:toolsy", "what is 6 times 7?")
    [stored] = calc_pane.message.tool_calls
    assert stored["name"] == "calculator" and stored["result"] == "42" and json.loads(stored["arguments"]) == {"expression": "6*7"}
    assert stored["error"] is None and stored["duration_ms"] >= 0
    assert calc_pane.message.content == "The answer is 42." and calc_pane.message.finish_reason == "stop"
    assert plain_pane.message.tool_calls is None and demo_pane.message.tool_calls is None

    # The exports carry each pane's tool calls.
    jsonl_out = loop.run_until_complete(tab.handlers.export("jsonl", None, request("toolsy")))
    [record] = [json.loads(line) for line in Path(jsonl_out[tab.download]["value"]).read_text().splitlines()]
    [exported] = record["panes"][0]["tool_calls"]
    assert exported["name"] == "calculator" and exported["result"] == "42"
    assert record["panes"][1]["tool_calls"] is None
    csv_out = loop.run_until_complete(tab.handlers.export("csv", None, request("toolsy")))
    rows = list(csv.DictReader(io.StringIO(Path(csv_out[tab.download]["value"]).read_text())))
    assert json.loads(rows[0]["tool_calls"])[0]["result"] == "42" and rows[1]["tool_calls"] == ""

    # A follow-up in the same panes keeps the answer (not the tool messages) in the pane's history.
    collect(loop, tab, run_data(tab, "and 6 times 8?", models, session=session, tools=True), "toolsy")
    third = requests_of(fake_server, "cmp-calc", before)[2]
    assert [m["content"] for m in third.json["messages"][:2]] == ["what is 6 times 7?", "The answer is 42."]


def test_tools_off_offers_no_tools_to_any_pane(tab, app, fake_server, loop):
    _, services = app
    fake_server.set_scenario("cmp-calc-off", Scenario(text="I would rather not calculate.", tokens=5))
    before = len(fake_server.requests)
    updates = collect(loop, tab, run_data(tab, "no tools please", ["openai:cmp-calc-off", "anthropic:cmp-calc-off"]), "toolless")
    for i in range(2):
        assert tool_blocks(updates[-1][tab.chatbots[i]]) == []
    sent = requests_of(fake_server, "cmp-calc-off", before)
    assert len(sent) == 2 and all("tools" not in r.json for r in sent)
    assert all(p.message.tool_calls is None for p in stored_panes(services, "user:toolless", "no tools please"))


def test_blind_tool_blocks_show_the_tool_but_not_the_model(tab, fake_server, loop):
    # The model names itself in its tool call's arguments; the tool's error repeats it.
    fake_server.set_scenario("cmp-blind-tool", Scenario(
        tool_calls=[{"name": "calculator", "arguments": {"expression": "openai + cmp-blind-tool"}}],
        then=Scenario(text="Done.", tokens=1)))  # fmt: skip
    updates = collect(loop, tab, run_data(tab, "blind tools", ["openai:cmp-blind-tool", "gemini:tokens-3"], blind=True,
                                          tools=True), "blindtools")  # fmt: skip
    sent = " ".join(wire(u) for u in updates).lower()
    assert "calculator" in sent, "the tool's name is shown"
    for secret in ("cmp-blind-tool", "openai", "gemini"):
        assert secret not in sent, f"{secret} reached the browser before the vote"
    blocks = [b for i in range(2) for b in tool_blocks(updates[-1][tab.chatbots[i]])]
    assert len(blocks) == 1 and blocks[0]["metadata"]["title"] == "🛠 calculator (error)"
    assert "the model + the model" in blocks[0]["content"] and "Unknown name 'the model'" in blocks[0]["content"]


def test_stop_during_a_tools_run_saves_every_pane_with_its_tool_calls(tab, app, fake_server, loop):
    """Stop while one pane streams its answer after a tool and another pane's tool is still running."""
    _, services = app
    fake_server.set_scenario("cmp-calc-slow", Scenario(tool_calls=CALC, then=Scenario(tokens=200, rate=20)))
    fake_server.set_scenario("cmp-lookup", Scenario(tool_calls=[{"name": "slow_lookup", "arguments": {}}],
                                                    then=Scenario(text="never")))  # fmt: skip
    tool_cancelled = asyncio.Event()

    @tool
    async def slow_lookup() -> str:
        """Looks something up, slowly."""
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            tool_cancelled.set()
            raise
        return "late"

    session: dict = {}
    data = run_data(tab, "stop the tools", ["openai:cmp-calc-slow", "anthropic:cmp-lookup"], session=session, tools=True)
    services_of_tab = tab.handlers.s
    original = services_of_tab.toolbox
    services_of_tab.toolbox = Toolbox([*builtin_tools(), slow_lookup])

    async def stream_then_stop():
        async with aclosing(tab.handlers.run(data, request("toolstopper"))) as gen:
            async for update in gen:
                calc = " ".join(b["content"] for b in update.get(tab.chatbots[0], []))
                lookup = tool_blocks(update.get(tab.chatbots[1], []))
                if "dolor2" in calc and lookup and lookup[0]["metadata"]["status"] == "pending":
                    break  # Stop: the generator is closed mid-stream

    try:
        loop.run_until_complete(asyncio.wait_for(stream_then_stop(), 15))
    finally:
        services_of_tab.toolbox = original
    shown = loop.run_until_complete(tab.handlers.stop(session, None, request("toolstopper")))
    assert "Stopped" in shown[tab.status] and tool_cancelled.is_set()
    [stopped] = tool_blocks(shown[tab.chatbots[1]])
    assert stopped["metadata"]["title"] == "🛠 slow_lookup (stopped)"

    calc_pane, lookup_pane = stored_panes(services, "user:toolstopper", "stop the tools")
    assert calc_pane.message.finish_reason == "cancelled" and lookup_pane.message.finish_reason == "cancelled"
    assert [t["result"] for t in calc_pane.message.tool_calls] == ["42"]
    assert 3 <= len(calc_pane.message.content.split()) < 200, "the partial answer after the tool is kept"
    [lookup_call] = lookup_pane.message.tool_calls
    assert lookup_call["name"] == "slow_lookup" and lookup_call["result"] is None and lookup_call["error"]


def test_api_tools_are_used_returned_and_stored(app, fake_server):
    url, services = app
    fake_server.set_scenario("cmp-calc-api", Scenario(tool_calls=CALC, then=Scenario(text="The answer is 42.", tokens=4)))
    client = Client(url, verbose=False)
    calc, demo = client.predict(message="api: 6 times 7?", models=["openai:cmp-calc-api", NO_TOOLS], tools=True,
                                api_name="/compare")  # fmt: skip
    assert calc["text"] == "The answer is 42." and calc["finish_reason"] == "stop"
    [call] = calc["tools"]
    assert call["name"] == "calculator" and call["result"] == "42" and call["error"] is None and call["status"] == "done"
    assert json.loads(call["arguments"]) == {"expression": "6*7"} and call["duration_ms"] >= 0
    assert demo["tools"] == [] and demo["error"] is None and demo["text"]
    assert calc["output_tokens"] and calc["input_tokens"], "usage adds up over the loop's steps"

    # Without `tools` (the default), the same model is offered none and answers with a bare tool call.
    before = len(fake_server.requests)
    plain, _ = client.predict(message="api: no tools", models=["openai:cmp-calc-api", "gemini:tokens-3"], api_name="/compare")
    assert plain["tools"] == [] and "tools" not in requests_of(fake_server, "cmp-calc-api", before)[0].json

    with services.engine.connect() as c:
        owner = c.execute(sa.select(Conversation.__table__.c.owner).where(
            Conversation.__table__.c.title == "api: 6 times 7?")).scalars().first()  # fmt: skip
    calc_pane, demo_pane = stored_panes(services, owner, "api: 6 times 7?")
    assert [t["result"] for t in calc_pane.message.tool_calls] == ["42"] and demo_pane.message.tool_calls is None
