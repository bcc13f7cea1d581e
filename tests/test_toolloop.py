"""The tool loop through the real SDKs against the fake servers and the recorded tool-use streams.

Every test checks what went back on the wire: OpenAI `role: tool` + `tool_call_id`, Anthropic user
`tool_result` blocks with `tool_use_id`, Gemini `functionResponse` parts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel

from chat.providers.anthropic import AnthropicProvider
from chat.providers.base import Provider
from chat.providers.gemini import GeminiProvider
from chat.providers.openai import OpenAIProvider
from chat.toolloop import ToolLoop, ToolLoopResult
from chat.tools import Tool, ToolError, builtin_tools, tool
from chat.turn import Turn, TurnPolicy
from chat.types import FinishReason, Message, ModelInfo, Params, TextDelta, ToolCallDelta, ToolCallEvent
from tests.fakes import FakeServer, Scenario

KINDS = ("openai", "anthropic", "gemini")
ASK = [Message(role="system", content="be brief"), Message(role="user", content="What is the weather in Oslo?")]
OSLO = {"name": "get_weather", "arguments": {"city": "Oslo"}}
FINAL = "It is 12 C in Oslo."


@pytest.fixture
def srv(fake_server: FakeServer) -> FakeServer:
    return fake_server


def make(kind: str, srv: FakeServer) -> Provider:
    if kind == "openai":
        return OpenAIProvider(api_key="test-key", base_url=srv.openai_base_url)
    if kind == "anthropic":
        # Breakpoints off: the message shapes are checked here; tests/test_prompt_cache.py checks caching.
        return AnthropicProvider(api_key="test-key", base_url=srv.anthropic_base_url, prompt_cache=False)
    return GeminiProvider(api_key="test-key", base_url=srv.gemini_base_url)


def scenario(srv: FakeServer, name: str, **knobs: Any) -> str:
    srv.set_scenario(name, Scenario(**knobs))
    return name


def requests_for(srv: FakeServer, model: str) -> list[Any]:
    return [r.json for r in srv.requests if r.model == model]


def loop_for(kind: str, srv: FakeServer, model: str, tools: list[Tool], **kw: Any) -> ToolLoop:
    provider = make(kind, srv)
    return ToolLoop(provider, provider.model_info(model), kw.pop("messages", ASK), Params(), tools=tools, **kw)


async def run(loop: ToolLoop) -> ToolLoopResult:
    try:
        return await loop.run()
    finally:
        await loop.provider.aclose()


def tool_results(kind: str, body: dict[str, Any]) -> list[tuple[str, str]]:
    """(call id, or function name for Gemini; content) of every tool result in a request, in the wire shape."""
    if kind == "openai":
        return [(m["tool_call_id"], m["content"]) for m in body["messages"] if m["role"] == "tool"]
    if kind == "anthropic":
        return [
            (b["tool_use_id"], b["content"])
            for m in body["messages"] if m["role"] == "user" and isinstance(m["content"], list)
            for b in m["content"] if b["type"] == "tool_result"
        ]
    return [
        (p["functionResponse"]["name"], p["functionResponse"]["response"].get("result", p["functionResponse"]["response"].get("error")))
        for c in body["contents"] if c["role"] == "user"
        for p in c["parts"] if "functionResponse" in p
    ]


def tool_error_flags(kind: str, body: dict[str, Any]) -> list[bool]:
    """Whether each tool result in a request is marked as an error on the wire (OpenAI has no such mark)."""
    if kind == "anthropic":
        return [b.get("is_error", False) for m in body["messages"] if m["role"] == "user" and isinstance(m["content"], list)
                for b in m["content"] if b["type"] == "tool_result"]
    if kind == "gemini":
        return ["error" in p["functionResponse"]["response"] for c in body["contents"] if c["role"] == "user"
                for p in c["parts"] if "functionResponse" in p]
    return []


def tool_requests(kind: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, arguments) of the assistant's tool calls sent back in a request."""
    if kind == "openai":
        return [(c["function"]["name"], json.loads(c["function"]["arguments"]))
                for m in body["messages"] if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    if kind == "anthropic":
        return [(b["name"], b["input"]) for m in body["messages"] if m["role"] == "assistant"
                and isinstance(m["content"], list) for b in m["content"] if b["type"] == "tool_use"]
    return [(p["functionCall"]["name"], p["functionCall"]["args"]) for c in body["contents"] if c["role"] == "model"
            for p in c["parts"] if "functionCall" in p]


def result_key(kind: str, rec: Any) -> str:
    return rec.name if kind == "gemini" else rec.id


class Weather(BaseModel):
    city: str
    units: str = "c"


def weather_tool(calls: list[str] | None = None) -> Tool:
    @tool(name="get_weather")
    def get_weather(args: Weather) -> str:
        """The weather in a city."""
        if calls is not None:
            calls.append(args.city)
        return f"12 {args.units.upper()} in {args.city}"

    return get_weather


# -- the loop through each provider ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_one_call_runs_and_its_result_goes_back(srv, kind):
    model = scenario(srv, f"loop-one-{kind}", text="Let me check.", tool_calls=[OSLO], then=Scenario(text=FINAL))
    calls: list[str] = []
    r = await run(loop_for(kind, srv, model, [weather_tool(calls)]))
    assert r.error is None and r.finish_reason is FinishReason.STOP
    assert r.text == "Let me check.\n\n" + FINAL
    assert calls == ["Oslo"]
    [rec] = r.tools
    assert (rec.name, json.loads(rec.arguments), rec.result, rec.error, rec.status) == (
        "get_weather", {"city": "Oslo"}, "12 C in Oslo", None, "done")
    assert rec.duration_ms is not None and rec.id
    first, second = requests_for(srv, model)
    assert tool_results(kind, first) == []
    assert tool_requests(kind, second) == [("get_weather", {"city": "Oslo"})]
    assert tool_results(kind, second) == [(result_key(kind, rec), "12 C in Oslo")]
    if kind == "openai":
        assert second["messages"][-1] == {"role": "tool", "tool_call_id": rec.id, "content": "12 C in Oslo"}
    elif kind == "anthropic":
        assert second["messages"][-1] == {
            "role": "user", "content": [{"type": "tool_result", "tool_use_id": rec.id, "content": "12 C in Oslo"}]}
    else:
        assert second["contents"][-1] == {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"result": "12 C in Oslo"}}}]}
    # Aggregates: usage summed over the steps, time to first token from the first step.
    assert len(r.steps) == 2
    assert r.input_tokens == sum(s.input_tokens for s in r.steps)
    assert r.output_tokens == sum(s.output_tokens for s in r.steps)
    assert r.ttft_ms == r.steps[0].ttft_ms is not None and r.duration_ms >= r.ttft_ms
    # The messages the reply adds: the call, its result, the answer; they continue the conversation.
    assert [m.role for m in r.messages] == ["assistant", "tool", "assistant"]
    assert r.messages[0].tool_calls[0].id == rec.id and r.messages[1].tool_call_id == rec.id
    assert r.messages[1].name == "get_weather" and r.messages[2].content == FINAL


@pytest.mark.parametrize("kind", KINDS)
async def test_parallel_calls_run_concurrently(srv, kind):
    calls = [{"name": "meet", "arguments": {"who": "a"}}, {"name": "meet", "arguments": {"who": "b"}}]
    model = scenario(srv, f"loop-parallel-{kind}", tool_calls=calls, then=Scenario(text="Both met."))
    both_started = asyncio.Barrier(2)

    @tool
    async def meet(who: str) -> str:
        """Wait until the other call has started too (run one after the other, this would time out)."""
        await both_started.wait()
        return f"met {who}"

    r = await run(loop_for(kind, srv, model, [meet], tool_timeout=3))
    assert r.text == "Both met." and r.error is None
    assert [(t.result, t.error, t.status) for t in r.tools] == [("met a", None, "done"), ("met b", None, "done")]
    assert len({t.id for t in r.tools}) == 2
    second = requests_for(srv, model)[1]
    assert [content for _, content in tool_results(kind, second)] == ["met a", "met b"]
    assert [key for key, _ in tool_results(kind, second)] == [result_key(kind, t) for t in r.tools]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_tool_error_goes_back_to_the_model(srv, kind):
    calls = [OSLO, {"name": "broken", "arguments": {}}]
    model = scenario(srv, f"loop-error-{kind}", tool_calls=calls, then=Scenario(text="Sorry, no weather."))

    @tool(name="get_weather")
    def down(city: str) -> str:
        """The weather in a city."""
        raise ToolError("the weather service is down")

    @tool
    def broken() -> str:
        """A tool with a bug."""
        raise RuntimeError("secret internals")

    r = await run(loop_for(kind, srv, model, [down, broken]))
    assert r.text == "Sorry, no weather." and r.error is None and r.finish_reason is FinishReason.STOP
    weather, bug = r.tools
    assert (weather.error, weather.result, weather.status) == ("the weather service is down", None, "done")
    assert bug.error == "broken failed unexpectedly (RuntimeError)." and "secret" not in bug.content
    second = requests_for(srv, model)[1]
    assert tool_results(kind, second) == [
        (result_key(kind, weather), "Error: the weather service is down"),
        (result_key(kind, bug), "Error: broken failed unexpectedly (RuntimeError)."),
    ]
    assert tool_error_flags(kind, second) == ([] if kind == "openai" else [True, True])


@pytest.mark.parametrize("kind", KINDS)
async def test_bad_arguments_go_back_and_the_loop_goes_on(srv, kind):
    bad = [{"name": "get_weather", "arguments": {"town": "Oslo", "units": 7}}]
    then = Scenario(tool_calls=[OSLO], then=Scenario(text=FINAL))
    model = scenario(srv, f"loop-badargs-{kind}", tool_calls=bad, then=then)
    calls: list[str] = []
    r = await run(loop_for(kind, srv, model, [weather_tool(calls)]))
    assert r.text == FINAL and r.error is None
    assert calls == ["Oslo"]  # the tool ran only with valid arguments
    wrong, right = r.tools
    assert wrong.status == "done" and wrong.result is None
    assert wrong.error.startswith(
        "Invalid arguments for get_weather: city: Field required; units: Input should be a valid string")
    assert "Call the tool again" in wrong.error
    assert (right.step, right.result) == (2, "12 C in Oslo")
    second, third = requests_for(srv, model)[1:]
    [(_, sent)] = tool_results(kind, second)
    assert sent == "Error: " + wrong.error
    assert tool_error_flags(kind, third) == ([] if kind == "openai" else [True, False])  # the retry succeeded
    assert [c for _, c in tool_results(kind, third)] == ["Error: " + wrong.error, "12 C in Oslo"]


@pytest.mark.parametrize("kind", KINDS)
async def test_the_step_limit_stops_a_runaway_loop(srv, kind):
    model = scenario(srv, f"loop-runaway-{kind}", text="Again.", tool_calls=[OSLO])  # always asks for the tool
    calls: list[str] = []
    r = await run(loop_for(kind, srv, model, [weather_tool(calls)], max_steps=3))
    assert len(requests_for(srv, model)) == 3 and len(r.steps) == 3
    assert calls == ["Oslo", "Oslo"]  # the third step's call is not run
    assert [t.status for t in r.tools] == ["done", "done", "cancelled"]
    assert "limit of 3 steps" in r.tools[-1].error
    assert r.step_limit_reached and r.finish_reason is FinishReason.TOOL_CALLS and r.finish_detail == "step_limit"
    assert r.text.endswith(r.note) and "Stopped after 3 steps" in r.note
    assert r.error is None
    # The last message has no unanswered tool calls, so the conversation can go on.
    assert r.messages[-1].role == "assistant" and not r.messages[-1].tool_calls and "Stopped" in r.messages[-1].content


@pytest.mark.parametrize("kind", KINDS)
async def test_cancelling_during_a_tool_cancels_it(srv, kind):
    slow_call = [{"name": "slow", "arguments": {}}]
    model = scenario(srv, f"loop-cancel-{kind}", tool_calls=slow_call, then=Scenario(text="x"))
    started, cancelled = asyncio.Event(), asyncio.Event()

    @tool
    async def slow() -> str:
        """Takes a long time."""
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    loop = loop_for(kind, srv, model, [slow], tool_timeout=60)
    task = asyncio.create_task(loop.run())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await loop.provider.aclose()
    assert cancelled.is_set()
    r = loop.result
    assert r.finish_reason is FinishReason.CANCELLED
    [rec] = r.tools
    assert rec.status == "cancelled" and rec.result is None and rec.error == "Stopped before it finished."
    assert len(requests_for(srv, model)) == 1  # the model was not asked again


async def test_closing_the_updates_feed_stops_the_tool(srv):
    """What Stop in the UI does: the handler stops iterating and the generator is closed."""
    model = scenario(srv, "loop-stop", tool_calls=[{"name": "slow", "arguments": {}}], then=Scenario(text="x"))
    cancelled = asyncio.Event()

    @tool
    async def slow() -> str:
        """Takes a long time."""
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    loop = loop_for("openai", srv, model, [slow], tool_timeout=60)
    seen_running = False
    async with asyncio.timeout(5):
        feed = loop.updates(interval=0)
        async for snap in feed:
            if snap.tools and snap.tools[0].running:
                seen_running = True
                break
        await feed.aclose()
    await loop.provider.aclose()
    assert seen_running and cancelled.is_set()
    assert loop.result.finish_reason is FinishReason.CANCELLED and loop.result.tools[0].status == "cancelled"


async def test_updates_show_pending_records_then_results(srv):
    model = scenario(srv, "loop-updates", text="Checking.", tool_calls=[OSLO], then=Scenario(text=FINAL))
    release = asyncio.Event()

    @tool(name="get_weather")
    async def gated(city: str) -> str:
        """The weather in a city."""
        await release.wait()
        return "12 C"

    loop = loop_for("anthropic", srv, model, [gated])
    seen: list[tuple[str, str, bool, int]] = []
    async with asyncio.timeout(5):
        async for snap in loop.updates(interval=0):
            assert snap is loop.result and snap.turn is snap.steps[-1]
            for rec in snap.tools:
                seen.append((rec.status, rec.result or "", rec.running, len(snap.steps)))
                if rec.running:
                    release.set()
    await loop.provider.aclose()
    assert ("pending", "", True, 1) in seen  # the UI saw the tool running in step 1
    assert seen[-1] == ("done", "12 C", False, 2)
    assert loop.result.text == "Checking.\n\n" + FINAL


async def test_run_reports_every_change_to_on_change_without_coalescing(srv):
    """What compare panes use: several loops share one coalesced feed, so each reports raw changes."""
    model = scenario(srv, "loop-on-change", text="Checking.", tool_calls=[OSLO], then=Scenario(text=FINAL))
    release = asyncio.Event()

    @tool(name="get_weather")
    async def gated(city: str) -> str:
        """The weather in a city."""
        await release.wait()
        return "12 C"

    loop = loop_for("gemini", srv, model, [gated])
    seen: list[tuple[str, bool]] = []

    def on_change() -> None:
        for rec in loop.result.tools:
            seen.append((rec.status, rec.running))
            if rec.running:
                release.set()

    try:
        async with asyncio.timeout(5):
            r = await loop.run(on_change=on_change)
    finally:
        await loop.provider.aclose()
    assert ("pending", True) in seen and seen[-1] == ("done", False)
    assert r.text == "Checking.\n\n" + FINAL and r.finish_reason is FinishReason.STOP
    calls = len(seen)
    loop._changed()  # the callback is let go once the run ends
    assert len(seen) == calls


async def test_unknown_tool_and_timeout_are_errors_for_the_model(srv):
    calls = [{"name": "teleport", "arguments": {}}, {"name": "sleepy", "arguments": {}}]
    model = scenario(srv, "loop-unknown", tool_calls=calls, then=Scenario(text="ok"))

    @tool
    def sleepy() -> str:
        """Slow and sync."""
        time.sleep(0.3)
        return "late"

    r = await run(loop_for("openai", srv, model, [sleepy], tool_timeout=0.05))
    unknown, slow = r.tools
    assert unknown.error == "There is no tool named 'teleport'. Available tools: sleepy."
    assert slow.error == "sleepy took longer than 0.05 s and was stopped." and slow.status == "done"
    assert r.text == "ok"


async def test_a_model_without_tool_support_gets_no_tools(srv):
    model = scenario(srv, "loop-notools", text="Plain answer.")
    provider = make("openai", srv)
    info = ModelInfo(provider="openai", id=model, supports_tools=False)
    r = await ToolLoop(provider, info, ASK, Params(), tools=builtin_tools()).run()
    await provider.aclose()
    assert r.text == "Plain answer." and r.tools == []
    assert "tools" not in requests_for(srv, model)[-1]


async def test_a_provider_error_ends_the_loop_with_the_text_kept(srv):
    model = scenario(srv, "loop-provider-error", text="Checking.", tool_calls=[OSLO],
                     then=Scenario(text="It is twelve degrees", error_after=2))
    r = await run(loop_for("openai", srv, model, [weather_tool()], policy=TurnPolicy(max_attempts=1)))
    assert r.finish_reason is FinishReason.ERROR and r.error is not None and r.error.kind == "stream"
    assert r.text == "Checking.\n\nIt is" and r.tools[0].status == "done"
    assert r.messages[-1] == Message(role="assistant", content="It is ")


async def test_builtin_tools_through_the_loop(srv):
    calls = [{"name": "calculator", "arguments": {"expression": "9**9**9**9"}},
             {"name": "calculator", "arguments": {"expression": "(2 + 3) * sqrt(16)"}},
             {"name": "current_time", "arguments": {"timezone": "Mars/Olympus_Mons"}}]
    model = scenario(srv, "loop-builtins", tool_calls=calls, then=Scenario(text="done"))
    r = await run(loop_for("gemini", srv, model, builtin_tools()))
    assert [t.error for t in r.tools][0] == "The result is too large."
    assert r.tools[1].result == "20"
    assert r.tools[2].error.startswith("Unknown time zone 'Mars/Olympus_Mons'.")
    # No search function was lent: the search tool is not offered at all.
    names = [d["name"] for d in requests_for(srv, model)[0]["tools"][0]["functionDeclarations"]]
    assert names == ["calculator", "current_time"]


# -- signed reasoning that must come back within a tool loop -------------------------------------------


async def test_anthropic_thinking_blocks_go_back_with_the_tool_call(srv):
    model = scenario(srv, "loop-thinking", reasoning="I should look it up.", tool_calls=[OSLO],
                     then=Scenario(text=FINAL))
    r = await run(loop_for("anthropic", srv, model, [weather_tool()]))
    assert r.text == FINAL and r.reasoning.startswith("I should look it up.")
    assistant = requests_for(srv, model)[1]["messages"][1]
    thinking, use = assistant["content"]
    assert thinking["type"] == "thinking" and thinking["thinking"] == "I should look it up."
    assert thinking["signature"].startswith("EqQBCgIYAh")  # the fake's signature_delta, unchanged
    assert use["type"] == "tool_use" and use["id"] == r.tools[0].id


# -- the recorded tool-use streams ------------------------------------------------------------------------


class CityArgs(BaseModel):
    city: str
    country: str
    units: str


@tool(name="GetWeatherArgs")
def get_weather_args(args: CityArgs) -> str:
    """Weather."""
    return f"{args.city}: 9 {args.units}"


@tool
def get_stock_price(ticker: str, exchange: str) -> str:
    """A stock price."""
    return f"{ticker}@{exchange}: 227.5"


async def test_openai_recorded_call_runs_and_goes_back(srv):
    model = scenario(srv, "loop-rec-openai", replay="openai_chat_c6aa7e397b71.sse", then=Scenario(text="Mild."))
    r = await run(loop_for("openai", srv, model, [get_weather_args]))
    [rec] = r.tools
    assert (rec.id, rec.name, rec.result) == ("call_c91SqDXlYFuETYv8mUHzz6pp", "GetWeatherArgs", "Edinburgh: 9 c")
    second = requests_for(srv, model)[1]
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_c91SqDXlYFuETYv8mUHzz6pp",
                                      "content": "Edinburgh: 9 c"}
    assert r.text == "Mild." and r.input_tokens == 76 + r.steps[1].input_tokens


async def test_openai_recorded_parallel_calls_stream_their_arguments(srv):
    model = scenario(srv, "loop-rec-parallel", replay="openai_chat_f82268f2fefd.sse", rate=300,
                     then=Scenario(text="Done."))
    loop = loop_for("openai", srv, model, [get_weather_args, get_stock_price])
    partial: list[tuple[int, str]] = []
    async for snap in loop.updates(interval=0):
        partial += [(t.index, t.arguments) for t in snap.tools if t.status == "pending" and not t.running]
    await loop.provider.aclose()
    r = loop.result
    assert [(t.id, t.result) for t in r.tools] == [
        ("call_JMW1whyEaYG438VE1OIflxA2", "Edinburgh: 9 c"), ("call_DNYTawLBoN8fj3KN6qU9N1Ou", "AAPL@NASDAQ: 227.5")]
    # The UI saw the arguments grow fragment by fragment before the calls were complete.
    finals = {t.index: t.arguments for t in r.tools}
    growing = [a for i, a in partial if a and a != finals[i]]
    assert growing and all(finals[i].startswith(a) for i, a in partial)
    second = requests_for(srv, model)[1]
    assert tool_results("openai", second) == [("call_JMW1whyEaYG438VE1OIflxA2", "Edinburgh: 9 c"),
                                              ("call_DNYTawLBoN8fj3KN6qU9N1Ou", "AAPL@NASDAQ: 227.5")]


async def test_anthropic_recorded_tool_use_runs_and_goes_back(srv):
    model = scenario(srv, "loop-rec-anthropic", replay="anthropic_tool_use_response.sse", then=Scenario(text="Sunny."))

    @tool
    def get_weather(location: str) -> str:
        """Weather."""
        return f"{location}: 21 C"

    r = await run(loop_for("anthropic", srv, model, [get_weather]))
    assert r.text == "I'll check the current weather in Paris for you.\n\nSunny."
    [rec] = r.tools
    assert (rec.id, rec.result) == ("toolu_01NRLabsLyVHZPKxbKvkfSMn", "Paris: 21 C")
    second = requests_for(srv, model)[1]
    assert second["messages"][1] == {"role": "assistant", "content": [
        {"type": "text", "text": "I'll check the current weather in Paris for you."},
        {"type": "tool_use", "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "name": "get_weather",
         "input": {"location": "Paris"}}]}
    assert tool_results("anthropic", second) == [("toolu_01NRLabsLyVHZPKxbKvkfSMn", "Paris: 21 C")]


async def test_anthropic_recorded_incomplete_arguments_are_not_run(srv):
    model = scenario(srv, "loop-rec-incomplete", replay="anthropic_incomplete_partial_json_response.sse",
                     then=Scenario(text="never"))
    ran: list[str] = []

    @tool
    def make_file(filename: str = "", lines_of_text: list[str] | None = None) -> str:
        """Write a file."""
        ran.append(filename)
        return "ok"

    r = await run(loop_for("anthropic", srv, model, [make_file]))
    assert ran == [] and len(requests_for(srv, model)) == 1
    assert r.finish_reason is FinishReason.LENGTH
    [rec] = r.tools
    assert rec.name == "make_file" and rec.arguments and rec.status == "cancelled"
    assert "was not run" in rec.error


async def test_gemini_recorded_call_goes_back_with_its_thought_signature(srv):
    fixture = "gemini_googleai_streaming-success-thinking-function-call-thought-summary-signature.txt"
    model = scenario(srv, "loop-rec-gemini", replay=fixture, then=Scenario(text="82 days."))

    @tool
    def now() -> str:
        """The current time."""
        return "2025-10-10T12:00:00Z"

    r = await run(loop_for("gemini", srv, model, [now]))
    assert r.text == "82 days." and r.reasoning.startswith("**Calculating the Days**")
    [rec] = r.tools
    assert (rec.name, rec.result) == ("now", "2025-10-10T12:00:00Z")
    recorded = re.search(r'"thoughtSignature": "([^"]+)"', _fixture_text(fixture))[1]
    second = requests_for(srv, model)[1]
    call_part = second["contents"][1]["parts"][0]
    assert call_part["functionCall"]["name"] == "now"
    sent = call_part.get("thoughtSignature", call_part.get("thought_signature"))
    # google-genai writes bytes as URL-safe base64 (Google's JSON parser takes either alphabet).
    assert base64.urlsafe_b64decode(sent) == base64.b64decode(recorded)  # Gemini 3 refuses the step without it
    assert tool_results("gemini", second) == [("now", "2025-10-10T12:00:00Z")]


def _fixture_text(name: str) -> str:
    return (Scenario(replay=name).replay_path()).read_text()


# -- arguments stream in every wire format -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_arguments_stream_as_deltas_in_every_wire_format(srv, kind):
    call = {"name": "get_weather", "arguments": {"city": "Reykjavik", "units": "f"}}
    model = scenario(srv, f"loop-deltas-{kind}", tool_calls=[call])
    provider = make(kind, srv)
    turn = Turn(provider, provider.model_info(model), ASK, Params(), tools=[weather_tool().spec()])
    events = [e async for e in turn.events()]
    await provider.aclose()
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    [done] = [e.call for e in events if isinstance(e, ToolCallEvent)]
    assert json.loads("".join(d.arguments for d in deltas)) == {"city": "Reykjavik", "units": "f"}
    assert json.loads(done.arguments) == {"city": "Reykjavik", "units": "f"}
    if kind != "gemini":  # Gemini sends each call whole, in one part
        assert len([d for d in deltas if d.arguments]) > 1
    assert not [e for e in events if isinstance(e, TextDelta)]
    assert turn.result.finish_reason is FinishReason.TOOL_CALLS


async def test_sync_tools_run_off_the_event_loop(srv):
    model = scenario(srv, "loop-thread", tool_calls=[{"name": "where", "arguments": {}}], then=Scenario(text="ok"))
    seen: list[int] = []

    @tool
    def where() -> str:
        """Which thread."""
        seen.append(threading.get_ident())
        return "here"

    r = await run(loop_for("openai", srv, model, [where]))
    assert r.tools[0].result == "here" and seen and seen[0] != threading.get_ident()


def test_the_fake_follows_then_by_rounds_of_tool_calls():
    chain = Scenario.from_dict({"tool_calls": [OSLO], "then": {"tool_calls": [OSLO], "then": {"text": "end"}}})
    assert chain.then is not None and chain.then.then is not None
    assert [chain.after_tool_rounds(n) for n in range(4)] == [chain, chain.then, chain.then.then, chain.then.then]


async def test_updates_are_coalesced(srv):
    model = scenario(srv, "loop-coalesce", text="word " * 300, tool_calls=[OSLO], then=Scenario(tokens=300))
    loop = loop_for("openai", srv, model, [weather_tool()])
    count = 0
    async for _ in loop.updates(interval=30):
        count += 1
    await loop.provider.aclose()
    assert count == 2  # the first change at once, then only the end (600 tokens and a tool run in between)
    assert loop.result.output_tokens == 600 and loop.result.done
