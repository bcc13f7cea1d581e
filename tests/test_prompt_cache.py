"""Anthropic prompt caching (issue 18): the exact cache_control breakpoints sent through the real anthropic SDK,
none when ANTHROPIC_PROMPT_CACHE=off, the fake's cache as the real API reports it, and the cache prices."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import anthropic
import pytest

from chat.providers.anthropic import AnthropicProvider
from chat.registry import Registry, Settings
from chat.types import Message, Params, ToolCall, ToolSpec, Usage
from compare.pricing import Price, PriceTable
from tests.fakes import FakeServer, Scenario

EPHEMERAL = {"type": "ephemeral"}
TOOLS = [ToolSpec("get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}}),
         ToolSpec("now", "The time")]


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer(api_key="test-key") as server:
        yield server


def claude(srv: FakeServer, **knobs) -> str:
    name = f"claude-test-cache-{uuid.uuid4().hex[:8]}"
    srv.set_scenario(name, Scenario(tokens=3, **knobs))
    return name


async def send(provider: AnthropicProvider, model: str, messages: list[Message], tools=()) -> list:
    try:
        return [e async for e in provider.stream(model, messages, Params(max_tokens=64), tools=tools)]
    finally:
        await provider.aclose()


def body(srv: FakeServer, model: str) -> dict:
    return [r for r in srv.requests if r.model == model][-1].json


def marked(text: str) -> dict:
    return {"type": "text", "text": text, "cache_control": EPHEMERAL}


async def test_breakpoints_on_tools_system_and_the_two_ends_of_the_conversation(srv):
    model = claude(srv)
    history = [Message(role="system", content="You are terse."), Message(role="user", content="first question"),
               Message(role="assistant", content="first answer"), Message(role="user", content="second question")]
    await send(AnthropicProvider(api_key="test-key", base_url=srv.anthropic_base_url), model, history, TOOLS)
    sent = body(srv, model)
    assert sent["tools"] == [
        {"name": "get_weather", "description": "Weather for a city",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "now", "description": "The time", "input_schema": {"type": "object", "properties": {}},
         "cache_control": EPHEMERAL},
    ]
    assert sent["system"] == [marked("You are terse.")]
    # The last message is written for the next turn; the one three from the end is where the previous
    # request (this conversation's last turn) put its last breakpoint, so it is read back exactly.
    assert sent["messages"] == [
        {"role": "user", "content": [marked("first question")]},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [marked("second question")]},
    ]
    assert json.dumps(sent).count('"cache_control"') == 4


async def test_a_tool_loop_step_marks_the_tool_result_and_the_question(srv):
    model = claude(srv)
    call = ToolCall(id="toolu_1", name="get_weather", arguments='{"city": "Oslo"}')
    history = [Message(role="user", content="weather in Oslo?"), Message(role="assistant", content="", tool_calls=(call,)),
               Message(role="tool", content="12 C", tool_call_id="toolu_1")]
    await send(AnthropicProvider(api_key="test-key", base_url=srv.anthropic_base_url), model, history, TOOLS[:1])
    sent = body(srv, model)
    assert sent["messages"][0] == {"role": "user", "content": [marked("weather in Oslo?")]}
    assert sent["messages"][1]["content"] == [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                               "input": {"city": "Oslo"}}]
    assert sent["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "12 C",
                                               "cache_control": EPHEMERAL}]


@pytest.mark.parametrize("turns", [1, 2, 3, 8])
async def test_never_more_than_four_breakpoints(srv, turns):
    model = claude(srv)
    history = [Message(role="system", content="sys")]
    for i in range(turns):
        history += [Message(role="user", content=f"q{i}"), Message(role="assistant", content=f"a{i}")]
    history.append(Message(role="user", content="last"))
    events = await send(AnthropicProvider(api_key="test-key", base_url=srv.anthropic_base_url), model, history, TOOLS)
    assert json.dumps(body(srv, model)).count('"cache_control"') == 4
    assert any(isinstance(e, Usage) for e in events), "the API took it (it refuses more than 4)"


async def test_anthropic_prompt_cache_off_sends_no_breakpoint(srv):
    env = {"ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": srv.anthropic_base_url, "ANTHROPIC_PROMPT_CACHE": "off",
           "PARLEY_MODELS_FILE": ""}
    model = claude(srv)
    provider, _ = Registry.from_settings(Settings.from_env(env)).resolve(f"anthropic:{model}")
    assert isinstance(provider, AnthropicProvider)
    history = [Message(role="system", content="You are terse."), Message(role="user", content="q"),
               Message(role="assistant", content="a"), Message(role="user", content="q2")]
    await send(provider, model, history, TOOLS)
    sent = body(srv, model)
    assert "cache_control" not in json.dumps(sent)
    assert sent["system"] == "You are terse." and sent["messages"][-1] == {"role": "user", "content": "q2"}


async def test_the_fake_refuses_a_fifth_breakpoint_as_the_api_does(srv):
    model = claude(srv)
    client = anthropic.AsyncAnthropic(api_key="test-key", base_url=srv.anthropic_base_url, max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="A maximum of 4 blocks with cache_control"):
        await client.messages.create(model=model, max_tokens=16, messages=[
            {"role": "user", "content": [marked(f"part {i}") for i in range(5)]}])
    await client.close()


async def test_usage_reads_back_cache_writes_then_reads(srv):
    """A prefix over the minimum is written on first sight and read when it comes again; the usage contract counts
    both inside input_tokens (Anthropic's own input_tokens is only the uncached rest)."""
    model = claude(srv)
    long_system = " ".join(f"rule{i}" for i in range(1500))  # 1,503 fake tokens: over the 1,024 minimum
    history = [Message(role="system", content=long_system), Message(role="user", content="one two three")]
    provider = AnthropicProvider(api_key="test-key", base_url=srv.anthropic_base_url)
    first = [e for e in await send(provider, model, history) if isinstance(e, Usage)][-1]
    assert (first.cache_write_tokens, first.cached_input_tokens) == (1503 + 6, 0)
    assert first.input_tokens == 1503 + 6, "everything up to the last breakpoint was written"
    again = [e for e in await send(provider, model, history) if isinstance(e, Usage)][-1]
    assert (again.cached_input_tokens, again.cache_write_tokens, again.input_tokens) == (1509, 0, 1509)
    short = claude(srv)
    small = [e for e in await send(provider, short, [Message(role="user", content="hi")]) if isinstance(e, Usage)][-1]
    assert (small.cached_input_tokens, small.cache_write_tokens) == (0, 0), "under the minimum: not cached"


def test_cache_tokens_are_priced_at_the_anthropic_multiples_unless_the_table_says():
    usage = Usage(input_tokens=10_000, output_tokens=1_000, cached_input_tokens=8_000, cache_write_tokens=1_500)
    table = PriceTable()  # claude-sonnet-4-6: input 3, output 15, reads 0.30, writes 3.75
    expected = (500 * 3 + 8_000 * 0.30 + 1_500 * 3.75 + 1_000 * 15) / 1e6
    assert table.usage_cost("anthropic:claude-sonnet-4-6", usage) == pytest.approx(expected)
    own = PriceTable({"anthropic:claude-custom": Price(2.0, 10.0)})  # no cache prices given: 0.1x and 1.25x input
    assert own.usage_cost("anthropic:claude-custom", usage) == pytest.approx(
        (500 * 2 + 8_000 * 0.2 + 1_500 * 2.5 + 1_000 * 10) / 1e6)
    mine = PriceTable({"anthropic:claude-custom": Price(2.0, 10.0, cache_read=0.5, cache_write=4.0)})
    assert mine.usage_cost("anthropic:claude-custom", usage) == pytest.approx(
        (500 * 2 + 8_000 * 0.5 + 1_500 * 4.0 + 1_000 * 10) / 1e6)
    other = PriceTable({"openai:gpt-custom": Price(2.0, 10.0)})  # others: unknown cache prices stay unpriced
    assert other.usage_cost("openai:gpt-custom", usage) == pytest.approx((500 * 2 + 1_000 * 10) / 1e6)
