"""One usage contract (chat.types.Usage) from every provider, one tokens-per-second definition, and
where the figures go: costs, the metrics line, the /compare items, batch rows, storage, exports."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from chat.providers.anthropic import AnthropicProvider
from chat.providers.base import Provider
from chat.providers.demo import DemoProvider
from chat.providers.gemini import GeminiProvider
from chat.providers.openai import OpenAIProvider
from chat.turn import Turn, TurnResult
from chat.types import (
    MIN_RATE_TOKENS,
    Finish,
    FinishReason,
    Message,
    ModelInfo,
    Params,
    ReasoningDelta,
    TextDelta,
    Usage,
    tokens_per_second,
)
from compare.batch import RESULT_FIELDS, Prompt, result_row
from compare.pricing import Price, PriceTable
from tests.fakes import FakeServer, Scenario

FIXTURES = Path(__file__).parent / "fixtures" / "provider-streams"
HELLO = [Message(role="user", content="hi")]


def make(kind: str, srv: FakeServer) -> Provider:
    if kind == "openai":
        return OpenAIProvider(api_key="test-key", base_url=srv.openai_base_url)
    if kind == "anthropic":
        return AnthropicProvider(api_key="test-key", base_url=srv.anthropic_base_url)
    return GeminiProvider(api_key="test-key", base_url=srv.gemini_base_url)


async def run_replay(srv: FakeServer, kind: str, fixture: str | Path, name: str) -> TurnResult:
    """A whole Turn over a recorded stream, through the real SDK."""
    srv.set_scenario(name, Scenario(replay=str(fixture)))
    provider = make(kind, srv)
    try:
        return await Turn(provider, provider.model_info(name), HELLO, Params()).run()
    finally:
        await provider.aclose()


def edited(tmp_path: Path, fixture: str, old: str, new: str) -> Path:
    """A copy of a recorded stream with one usage field changed (recordings with caching are not public)."""
    text = (FIXTURES / fixture).read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{fixture} no longer holds {old!r}"
    path = tmp_path / fixture
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


# -- Gemini: thinking is output -------------------------------------------------------------------


async def test_gemini_thinking_counts_as_output_in_the_turn_rate_and_cost(fake_server):
    r = await run_replay(fake_server, "gemini", "gemini_googleai_streaming-success-thinking-reply-thought-summary.txt",
                         "usage-gemini-thoughts")
    assert r.error is None
    assert r.usage == Usage(input_tokens=10, output_tokens=588, reasoning_tokens=540, estimated=False)
    # Before: output 48 minus 540 reasoning gave 0 answer tokens, so no rate at all.
    assert r.tokens_per_second == tokens_per_second(588, r.ttft_ms, r.duration_ms)
    assert r.tokens_per_second is not None
    cost = PriceTable().usage_cost("gemini:gemini-2.5-flash", r.usage)
    assert cost == pytest.approx((10 * 0.30 + 588 * 2.50) / 1e6)


# -- cached input, through each real SDK ----------------------------------------------------------


async def test_openai_cached_tokens_are_part_of_the_prompt(fake_server, tmp_path):
    path = edited(tmp_path, "openai_chat_e2aad469b71d.sse", '"completion_tokens_details":{"reasoning_tokens":0}',
                  '"completion_tokens_details":{"reasoning_tokens":0},"prompt_tokens_details":{"cached_tokens":8}')
    r = await run_replay(fake_server, "openai", path, "usage-openai-cached")
    assert r.usage == Usage(input_tokens=14, output_tokens=30, reasoning_tokens=0, cached_input_tokens=8)
    assert r.usage.uncached_input_tokens == 6


async def test_anthropic_cache_reads_and_writes_are_added_to_its_input_tokens(fake_server, tmp_path):
    path = edited(tmp_path, "anthropic_tool_use_response.sse", '"cache_creation_input_tokens":0,"cache_read_input_tokens":0',
                  '"cache_creation_input_tokens":50,"cache_read_input_tokens":1000')
    r = await run_replay(fake_server, "anthropic", path, "usage-anthropic-cached")
    # Anthropic's input_tokens (377) is only the uncached rest of the prompt.
    assert r.usage == Usage(input_tokens=377 + 1000 + 50, output_tokens=65, cached_input_tokens=1000, cache_write_tokens=50)
    price = Price(3.0, 15.0, cache_read=0.30, cache_write=3.75)
    table = PriceTable({"anthropic:*": price})
    assert table.usage_cost("anthropic:claude-sonnet-4-6", r.usage) == pytest.approx(
        (377 * 3.0 + 65 * 15.0 + 1000 * 0.30 + 50 * 3.75) / 1e6)


async def test_gemini_cached_content_tokens(fake_server, tmp_path):
    path = edited(tmp_path, "gemini_googleai_streaming-success-basic-reply-short.txt",
                  '"promptTokenCount": 7,"candidatesTokenCount": 10',
                  '"promptTokenCount": 7,"cachedContentTokenCount": 4,"candidatesTokenCount": 10')
    r = await run_replay(fake_server, "gemini", path, "usage-gemini-cached")
    assert r.usage == Usage(input_tokens=7, output_tokens=10, cached_input_tokens=4)


def test_cache_prices_apply_only_where_known():
    usage = Usage(input_tokens=1000, output_tokens=100, cached_input_tokens=800, cache_write_tokens=100)
    known = PriceTable({"x:m": Price(1.0, 5.0, cache_read=0.1, cache_write=1.25)})
    assert known.usage_cost("x:m", usage) == pytest.approx((100 * 1.0 + 100 * 5.0 + 800 * 0.1 + 100 * 1.25) / 1e6)
    # No cache price: those tokens stay unpriced (no guess), the rest is priced as before.
    unknown = PriceTable({"x:m": Price(1.0, 5.0)})
    assert unknown.usage_cost("x:m", usage) == pytest.approx((100 * 1.0 + 100 * 5.0) / 1e6)
    # Without cache figures nothing changes.
    assert known.cost("x:m", 1000, 100) == pytest.approx((1000 * 1.0 + 100 * 5.0) / 1e6)


def test_cache_prices_survive_the_editable_table_and_files(tmp_path):
    table = PriceTable({"x:m": Price(1.0, 5.0, "n", cache_read=0.1, cache_write=1.25), "y:m": Price(2.0, 3.0)})
    assert PriceTable.from_rows(table.to_rows()) == table
    assert PriceTable.from_rows([["z:m", 1, 2, "old four-column row"]]).lookup("z:m") == Price(1, 2, "old four-column row")
    f = tmp_path / "prices.toml"
    f.write_text('[prices]\n"x:m" = { input = 1, output = 5, cache_read = 0.1, cache_write = 1.25 }\n')
    assert PriceTable.from_file(f).lookup("x:m") == Price(1, 5, "", 0.1, 1.25)
    f.write_text('[prices]\n"x:m" = { input = 1, output = 5, cache_read = -1 }\n')
    with pytest.raises(ValueError, match="cache_read cannot be negative"):
        PriceTable.from_file(f)


# -- estimates are marked -------------------------------------------------------------------------


class Scripted(Provider):
    name = "scripted"
    label = "Scripted"
    accepts = frozenset({"max_tokens"})

    def __init__(self, events, pause: float = 0.0):
        self.events = events
        self.pause = pause

    async def stream(self, model, messages, params, *, tools=()):
        for e in self.events:
            if isinstance(e, float):
                await asyncio.sleep(e)
                continue
            yield e


def scripted_turn(events) -> Turn:
    provider = Scripted(events)
    return Turn(provider, ModelInfo(provider="scripted", id="m"), HELLO, Params())


async def test_usage_is_an_estimate_until_the_provider_reports_it():
    words = [TextDelta(f"w{i} ") for i in range(12)]
    turn = scripted_turn([ReasoningDelta("think " * 8), *words, 0.02, Usage(5, 40, 16), Finish(FinishReason.STOP)])
    seen: list[Usage] = []
    async for r in turn.updates(interval=0):
        seen.append(r.usage)
    live = [u for u in seen[:-1] if u.output_tokens]
    assert live and all(u.estimated for u in live), "figures before the usage event are estimates"
    assert seen[-1] == Usage(5, 40, 16, estimated=False)


async def test_a_stopped_reply_keeps_estimates_marked_as_such():
    turn = scripted_turn([TextDelta("one two three "), 5.0, Usage(5, 40), Finish(FinishReason.STOP)])
    task = asyncio.create_task(turn.run())
    while not turn.result.text:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    r = turn.result
    assert r.finish_reason is FinishReason.CANCELLED
    assert r.usage.estimated and r.usage.output_tokens == 4  # 14 characters / 4, one piece


def test_metrics_line_marks_estimates():
    from ui.convert import format_metrics

    assert format_metrics(label="m", ttft_ms=None, tokens_per_second=None, output_tokens=120, estimated=True) == "m · ~120 tokens"
    assert format_metrics(label="m", ttft_ms=None, tokens_per_second=None, output_tokens=120) == "m · 120 tokens"
    assert "(50 in, 40 cached)" in format_metrics(label="m", ttft_ms=None, tokens_per_second=None, output_tokens=1,
                                                  input_tokens=50, cached_input_tokens=40)


async def test_chat_bubbles_show_estimates_after_stop_and_reported_figures_otherwise():
    from ui.convert import result_bubbles

    stopped = scripted_turn([TextDelta("a b c d e f g h "), 5.0, Finish(FinishReason.STOP)])
    task = asyncio.create_task(stopped.run())
    while not stopped.result.text:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    line = result_bubbles(stopped.result, "m")[-1].metadata["title"]
    assert "~4 tokens" in line
    done = await scripted_turn([TextDelta("a b c d "), Usage(3, 9), Finish(FinishReason.STOP)]).run()
    line = result_bubbles(done, "m")[-1].metadata["title"]
    assert "9 tokens (3 in)" in line and "~" not in line


# -- one tokens-per-second definition -------------------------------------------------------------


async def test_turn_rate_is_the_shared_definition_reasoning_included():
    events = [ReasoningDelta("think"), 0.05, *[TextDelta("x ") for _ in range(3)], 0.05, TextDelta("y"),
              Usage(1, 30, 20), Finish(FinishReason.STOP)]
    r = await scripted_turn(events).run()
    assert r.tokens_per_second == pytest.approx(tokens_per_second(30, r.ttft_ms, r.duration_ms))
    assert r.tokens_per_second == pytest.approx(30 * 1000 / (r.duration_ms - r.ttft_ms))


def test_rate_definition_edges():
    assert tokens_per_second(100, 500, 1500) == pytest.approx(100)
    assert tokens_per_second(MIN_RATE_TOKENS - 1, 0, 1000) is None  # a burst of a few tokens says nothing
    assert tokens_per_second(100, 1000, 1000) is None
    assert tokens_per_second(None, 0, 1000) is None and tokens_per_second(100, None, 1000) is None


def test_storage_uses_the_same_minimum():
    from storage import repository

    assert repository.MIN_RATE_TOKENS == MIN_RATE_TOKENS


def test_stored_history_rate_matches_the_definition():
    from ui.convert import stored_to_chatbot

    row = {"role": "assistant", "provider": "p", "model": "m", "content": "x", "finish_reason": "stop",
           "ttft_ms": 500, "duration_ms": 1500, "output_tokens": 100, "reasoning_tokens": 60}
    line = stored_to_chatbot([row])[-1]["metadata"]["title"]
    assert "100 tok/s" in line  # reasoning tokens count: 100 over the 1 s after the first token


# -- where the figures go -------------------------------------------------------------------------


async def test_batch_rows_carry_the_usage_contract(fake_server):
    r = await run_replay(fake_server, "gemini", "gemini_googleai_streaming-success-thinking-reply-thought-summary.txt",
                         "usage-gemini-batch")
    row = result_row(Prompt(id="p1", prompt="why blue"), r, started_at="t", prices=PriceTable())
    assert tuple(row) == RESULT_FIELDS
    assert (row["input_tokens"], row["output_tokens"], row["reasoning_tokens"], row["cached_input_tokens"],
            row["cache_write_tokens"], row["usage_estimated"]) == (10, 588, 540, None, None, False)
    assert row["tokens_per_second"] == pytest.approx(r.tokens_per_second, rel=1e-2)


async def test_compare_pane_metrics_carry_the_usage_contract(fake_server, tmp_path):
    from core.compare_run import metrics_of

    path = edited(tmp_path, "anthropic_tool_use_response.sse", '"cache_creation_input_tokens":0,"cache_read_input_tokens":0',
                  '"cache_creation_input_tokens":50,"cache_read_input_tokens":1000')
    r = await run_replay(fake_server, "anthropic", path, "usage-anthropic-pane")
    item = metrics_of(r, PriceTable()).as_dict()
    assert {k: item[k] for k in ("input_tokens", "output_tokens", "reasoning_tokens", "cached_input_tokens",
                                 "cache_write_tokens", "usage_estimated")} == {
        "input_tokens": 1427, "output_tokens": 65, "reasoning_tokens": None, "cached_input_tokens": 1000,
        "cache_write_tokens": 50, "usage_estimated": False}


def test_demo_usage_counts_reasoning_as_output():
    async def go() -> TurnResult:
        provider = DemoProvider(rate=0)
        return await Turn(provider, provider.model_info("reasoning-demo"), HELLO, Params()).run()

    r = asyncio.run(go())
    assert r.usage.reasoning_tokens and r.usage.output_tokens > r.usage.reasoning_tokens and not r.usage.estimated


# -- moderation ------------------------------------------------------------------------------------


async def test_moderation_returns_exactly_the_flagged_categories(fake_server):
    provider = OpenAIProvider(api_key="test-key", base_url=fake_server.openai_base_url)
    try:
        assert await provider.moderate("please FLAGME now") == ["harassment"]
        assert await provider.moderate("a harmless question") == []
    finally:
        await provider.aclose()


def test_usage_combines_steps():
    a = Usage(10, 5, None, 4, None)
    b = Usage(20, 7, 2, None, 3, estimated=True)
    assert Usage.combine([a, b]) == Usage(30, 12, 2, 4, 3, estimated=True)
    assert Usage.combine([]) == Usage()
    assert json.loads(json.dumps(a.as_dict()))["cached_input_tokens"] == 4


def test_compare_pane_line_marks_estimates():
    import dataclasses

    from core.compare_run import PaneMetrics
    from ui.compare.view import metrics_markdown

    live = PaneMetrics(model="x", text="t", ttft_ms=100, tokens_per_second=50.0, output_tokens=120, input_tokens=None,
                       duration_ms=1000, finish_reason=None, error=None, cost=None, usage_estimated=True)
    line = metrics_markdown(live, live=True, show_cost=True)
    assert "<b>~120</b>" in line and "<b>~50</b>" in line
    reported = metrics_markdown(dataclasses.replace(live, usage_estimated=False), live=False, show_cost=True)
    assert "<b>120</b>" in reported and "~" not in reported
