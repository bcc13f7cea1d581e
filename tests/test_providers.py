"""The three SDK providers, through the real SDKs, against the fake servers and recorded streams."""

from __future__ import annotations

import asyncio
import json

import pytest

from chat.errors import (
    AuthError,
    BadRequest,
    ChatError,
    ContextTooLong,
    ModelNotFound,
    NetworkError,
    NotConfigured,
    Overloaded,
    RateLimited,
    SafetyBlocked,
    StreamError,
)
from chat.providers._common import Failure, Who, classify, import_sdk, retry_after
from chat.providers.anthropic import AnthropicProvider, to_anthropic_messages
from chat.providers.base import Provider
from chat.providers.gemini import GeminiProvider, to_gemini_contents
from chat.providers.openai import OpenAIProvider, to_openai_messages
from chat.types import (
    Finish,
    FinishReason,
    Message,
    Params,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    ToolSpec,
    Usage,
)
from tests.fakes import FakeServer, Scenario, default_tokens

KINDS = ("openai", "anthropic", "gemini")
KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}
DEAD = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused at once

HELLO = [Message(role="system", content="be brief"), Message(role="user", content="hi")]


def make(kind: str, base: str | FakeServer, key: str = "test-key") -> Provider:
    """A provider of `kind` pointed at the fake server (or at a plain base URL)."""
    if isinstance(base, FakeServer):
        base = {"openai": base.openai_base_url, "anthropic": base.anthropic_base_url, "gemini": base.gemini_base_url}[kind]
    elif kind == "openai":
        base = base + "/v1"
    if kind == "openai":
        return OpenAIProvider(api_key=key, base_url=base)
    if kind == "anthropic":
        # Breakpoints off: these tests check the message shapes; tests/test_prompt_cache.py checks caching.
        return AnthropicProvider(api_key=key, base_url=base, prompt_cache=False)
    return GeminiProvider(api_key=key, base_url=base)


async def collect(
    provider: Provider,
    model: str,
    messages: list[Message] | None = None,
    params: Params | None = None,
    tools: list[ToolSpec] | None = None,
) -> tuple[list[StreamEvent], BaseException | None]:
    """All events of one stream and the exception that ended it (None if it ended normally)."""
    events: list[StreamEvent] = []
    try:
        async for event in provider.stream(model, messages or HELLO, params or Params(), tools=tools or ()):
            events.append(event)
    except Exception as e:  # noqa: BLE001 - returned for the test to inspect
        return events, e
    finally:
        await provider.aclose()
    return events, None


def text_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def reasoning_of(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, ReasoningDelta))


def of(events: list[StreamEvent], cls: type) -> list:
    return [e for e in events if isinstance(e, cls)]


@pytest.fixture
def srv(fake_server: FakeServer) -> FakeServer:
    return fake_server


def scenario(srv: FakeServer, name: str, **knobs) -> str:
    srv.set_scenario(name, Scenario(**knobs))
    return name


def requests_for(srv: FakeServer, model: str) -> list:
    return [r for r in srv.requests if r.model == model]


# -- the happy path ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_streams_text_then_usage_then_finish(srv, kind):
    model = scenario(srv, f"prov-basic-{kind}", tokens=5)
    events, exc = await collect(make(kind, srv), model)
    assert exc is None
    assert text_of(events) == "".join(default_tokens(5))
    assert [type(e) for e in events[-2:]] == [Usage, Finish]
    usage, finish = events[-2], events[-1]
    assert usage.output_tokens == 5 and usage.input_tokens and usage.input_tokens > 0
    assert finish.reason is FinishReason.STOP
    assert finish.model_version == model
    assert len(of(events, Finish)) == 1


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])  # the fake's OpenAI wire has no reasoning: see below
async def test_reasoning_streams_before_text(srv, kind):
    model = scenario(srv, f"prov-think-{kind}", tokens=3, reasoning="Think first. Then answer.")
    events, exc = await collect(make(kind, srv), model, params=Params(effort="low"))
    assert exc is None
    assert reasoning_of(events) == "Think first. Then answer."
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert all(isinstance(e, ReasoningDelta) for e in events[:first_text])
    assert of(events, Finish)[0].reason is FinishReason.STOP


def test_openai_reads_reasoning_fields_of_compatible_servers():
    from chat.providers.openai import ChunkReader

    def chunk(**delta):
        base = {"content": None, "refusal": None, "tool_calls": None}
        return {"model": "m", "usage": None, "choices": [{"index": 0, "delta": {**base, **delta}, "finish_reason": None}]}

    reader = ChunkReader()
    out = reader.feed(chunk(reasoning_content="deepseek says")) + reader.feed(chunk(reasoning="openrouter says"))
    out += reader.feed(chunk(content="answer"))
    assert out == [ReasoningDelta("deepseek says"), ReasoningDelta("openrouter says"), TextDelta("answer")]
    assert reader.end() == []  # no finish_reason: no Finish


@pytest.mark.parametrize("kind", KINDS)
async def test_tool_calls_stream_as_deltas_then_a_complete_call(srv, kind):
    model = scenario(srv, f"prov-tools-{kind}", tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}])
    tools = [ToolSpec("get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}})]
    events, exc = await collect(make(kind, srv), model, tools=tools)
    assert exc is None
    calls = of(events, ToolCallEvent)
    assert len(calls) == 1
    assert calls[0].call.name == "get_weather"
    assert calls[0].call.parsed_arguments() == {"city": "Oslo"}
    deltas = of(events, ToolCallDelta)
    assert deltas and deltas[0].name == "get_weather"
    assert json.loads("".join(d.arguments for d in deltas)) == {"city": "Oslo"}
    assert of(events, Finish)[0].reason is FinishReason.TOOL_CALLS
    body = requests_for(srv, model)[-1].json
    if kind == "openai":
        assert body["tools"] == [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                                                   "parameters": tools[0].parameters}}]
    elif kind == "anthropic":
        assert body["tools"] == [{"name": "get_weather", "description": "Weather for a city",
                                  "input_schema": tools[0].parameters}]
    else:
        decl = body["tools"][0]["functionDeclarations"][0]
        # google-genai 3.4 writes this one field in snake_case; Google's JSON parser takes either spelling.
        schema = decl.get("parametersJsonSchema", decl.get("parameters_json_schema"))
        assert decl["name"] == "get_weather" and schema == tools[0].parameters


# -- what goes on the wire -------------------------------------------------------------------------

PARAMS = Params(temperature=0.3, top_p=0.9, max_tokens=77, seed=5, effort="low")


async def test_openai_compatible_request_body(srv):
    model = scenario(srv, "prov-body-openai", tokens=2)
    events, exc = await collect(make("openai", srv), model, params=PARAMS)
    assert exc is None
    body = requests_for(srv, model)[-1].json
    assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["top_p"], body["seed"], body["max_tokens"]) == (0.3, 0.9, 5, 77)
    assert "reasoning_effort" not in body and "max_completion_tokens" not in body


async def test_official_openai_sends_max_completion_tokens_and_effort(srv):
    model = scenario(srv, "o4-mini-prov-body", tokens=2)  # a reasoning model by name: it takes an effort
    provider = OpenAIProvider(api_key="test-key", base_url=srv.openai_base_url, official=True, api="chat")
    events, exc = await collect(provider, model, params=PARAMS)
    assert exc is None
    body = requests_for(srv, model)[-1].json
    assert body["max_completion_tokens"] == 77 and "max_tokens" not in body
    assert body["reasoning_effort"] == "low"


def test_official_reasoning_models_get_no_sampling_params():
    provider = OpenAIProvider(api_key="k")  # api.openai.com
    body = provider.request("gpt-5.4", HELLO, PARAMS)
    assert "temperature" not in body and "top_p" not in body
    assert body["reasoning_effort"] == "low" and body["max_completion_tokens"] == 77


async def test_openai_without_include_usage_still_finishes(srv):
    model = scenario(srv, "prov-nousage", tokens=3)
    provider = OpenAIProvider(api_key="test-key", base_url=srv.openai_base_url, include_usage=False)
    events, exc = await collect(provider, model)
    assert exc is None
    assert "stream_options" not in requests_for(srv, model)[-1].json
    assert of(events, Usage) == []
    assert events[-1].reason is FinishReason.STOP


async def test_anthropic_request_body(srv):
    model = scenario(srv, "prov-body-anthropic", tokens=2)
    events, exc = await collect(make("anthropic", srv), model, params=PARAMS)
    assert exc is None
    req = requests_for(srv, model)[-1]
    body = req.json
    assert body["system"] == "be brief"
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["max_tokens"] == 77
    for absent in ("temperature", "top_p", "top_k", "seed"):
        assert absent not in body
    assert body["output_config"] == {"effort": "low"}
    assert body["thinking"]["type"] == "adaptive"
    assert req.headers["authorization"] == "Bearer test-key"


async def test_anthropic_always_sends_max_tokens(srv):
    model = scenario(srv, "prov-maxtok", tokens=2)
    events, exc = await collect(make("anthropic", srv), model, params=Params())
    assert exc is None
    body = requests_for(srv, model)[-1].json
    assert body["max_tokens"] == Params().max_tokens
    assert "output_config" not in body and "thinking" not in body


async def test_gemini_request_body(srv):
    model = scenario(srv, "prov-body-gemini", tokens=2)
    history = [*HELLO, Message(role="assistant", content="hello"), Message(role="user", content="again")]
    events, exc = await collect(make("gemini", srv), model, messages=history, params=PARAMS)
    assert exc is None
    req = requests_for(srv, model)[-1]
    body = req.json
    assert req.path.endswith(f"/models/{model}:streamGenerateContent")
    assert body["systemInstruction"]["parts"] == [{"text": "be brief"}]
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    gen = body["generationConfig"]
    assert (gen["temperature"], gen["topP"], gen["maxOutputTokens"], gen["seed"]) == (0.3, 0.9, 77, 5)
    thinking = gen["thinkingConfig"]  # google-genai 3.4 writes its keys in snake_case (proto JSON takes both)
    assert thinking.get("includeThoughts", thinking.get("include_thoughts")) is True
    assert thinking.get("thinkingLevel", thinking.get("thinking_level")) == "LOW"
    assert req.headers["x-goog-api-key"] == "test-key"


@pytest.mark.parametrize("kind", KINDS)
async def test_tool_results_go_back_in_the_provider_shape(srv, kind):
    model = scenario(srv, f"prov-toolresult-{kind}", tokens=2)
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Oslo"}')
    history = [
        Message(role="user", content="weather?"),
        Message(role="assistant", content="", tool_calls=(call,)),
        Message(role="tool", tool_call_id="call_1", name="get_weather", content="12 C"),
    ]
    events, exc = await collect(make(kind, srv), model, messages=history)
    assert exc is None
    body = requests_for(srv, model)[-1].json
    if kind == "openai":
        assert body["messages"][1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
        assert body["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "12 C"}
    elif kind == "anthropic":
        assert body["messages"][1] == {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}}],
        }
        assert body["messages"][2] == {
            "role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "12 C"}]
        }
    else:
        assert body["contents"][1] == {"role": "model", "parts": [{"functionCall": {"name": "get_weather",
                                                                                    "args": {"city": "Oslo"}}}]}
        assert body["contents"][2]["parts"][0]["functionResponse"] == {"name": "get_weather",
                                                                       "response": {"result": "12 C"}}


@pytest.mark.parametrize("kind", KINDS)
async def test_a_failed_tool_goes_back_marked_as_an_error(srv, kind):
    model = scenario(srv, f"prov-toolerror-{kind}", tokens=2)
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Atlantis"}')
    history = [
        Message(role="user", content="weather?"),
        Message(role="assistant", content="", tool_calls=(call,)),
        Message(role="tool", tool_call_id="call_1", name="get_weather", content="Error: unknown city", is_error=True),
    ]
    events, exc = await collect(make(kind, srv), model, messages=history)
    assert exc is None
    body = requests_for(srv, model)[-1].json
    if kind == "openai":  # no error flag in Chat Completions: the "Error:" prefix says it
        assert body["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "Error: unknown city"}
    elif kind == "anthropic":
        assert body["messages"][2]["content"] == [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "Error: unknown city", "is_error": True}]
    else:
        assert body["contents"][2]["parts"][0]["functionResponse"] == {"name": "get_weather",
                                                                       "response": {"error": "Error: unknown city"}}


def test_anthropic_merges_consecutive_same_role_messages():
    msgs = [
        Message(role="system", content="sys"),
        Message(role="user", content="one"),
        Message(role="user", content="two"),
        Message(role="assistant", content=""),  # empty: dropped, the API refuses empty text
        Message(role="assistant", content="three"),
        Message(role="tool", tool_call_id="t1", content="r1"),
        Message(role="tool", tool_call_id="t2", content="r2"),
        Message(role="user", content="four"),
    ]
    out = to_anthropic_messages(msgs)
    assert [m["role"] for m in out] == ["user", "assistant", "user"]
    assert out[0]["content"] == [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    assert out[1]["content"] == "three"
    assert [b["type"] for b in out[2]["content"]] == ["tool_result", "tool_result", "text"]


def test_message_converters_keep_roles():
    msgs = [Message(role="system", content="s"), Message(role="user", content="u"), Message(role="assistant", content="a")]
    assert [m["role"] for m in to_openai_messages(msgs)] == ["system", "user", "assistant"]
    assert [c.role for c in to_gemini_contents(msgs)] == ["user", "model"]


# -- recorded streams ------------------------------------------------------------------------------


async def replay(srv: FakeServer, kind: str, fixture: str, **knobs) -> tuple[list[StreamEvent], BaseException | None]:
    model = scenario(srv, f"replay-{kind}-{fixture}-{len(knobs)}", replay=fixture, **knobs)
    return await collect(make(kind, srv), model)


async def test_openai_recorded_text_with_usage(srv):
    events, exc = await replay(srv, "openai", "openai_chat_e2aad469b71d.sse")
    assert exc is None
    assert text_of(events) == (
        "I'm unable to provide real-time weather updates. To get the current weather in San Francisco, "
        "I recommend checking a reliable weather website or a weather app."
    )
    rid = events[-1].request_id  # the fake's x-request-id header (random per response)
    assert rid and rid.startswith("req_")
    assert events[-2:] == [
        Usage(input_tokens=14, output_tokens=30, reasoning_tokens=0),
        Finish(FinishReason.STOP, detail="stop", model_version="gpt-4o-2024-08-06", request_id=rid),
    ]


async def test_openai_recorded_length(srv):
    events, exc = await replay(srv, "openai", "openai_chat_4cc50a6135d2.sse")
    assert exc is None
    assert text_of(events) == '{"'
    assert events[-2] == Usage(input_tokens=79, output_tokens=1, reasoning_tokens=0)
    assert events[-1].reason is FinishReason.LENGTH


async def test_openai_recorded_tool_call(srv):
    events, exc = await replay(srv, "openai", "openai_chat_c6aa7e397b71.sse")
    assert exc is None
    [call] = of(events, ToolCallEvent)
    assert call.call.id == "call_c91SqDXlYFuETYv8mUHzz6pp" and call.call.name == "GetWeatherArgs"
    assert call.call.parsed_arguments() == {"city": "Edinburgh", "country": "UK", "units": "c"}
    # The call is complete before the usage chunk, and Finish comes last, after the usage.
    kinds = [type(e) for e in events if not isinstance(e, ToolCallDelta)]
    assert kinds == [ToolCallEvent, Usage, Finish]
    assert events[-1].reason is FinishReason.TOOL_CALLS and events[-2].input_tokens == 76


async def test_openai_recorded_parallel_tool_calls(srv):
    events, exc = await replay(srv, "openai", "openai_chat_f82268f2fefd.sse")
    assert exc is None
    calls = [e.call for e in of(events, ToolCallEvent)]
    assert [(c.id, c.name) for c in calls] == [
        ("call_JMW1whyEaYG438VE1OIflxA2", "GetWeatherArgs"),
        ("call_DNYTawLBoN8fj3KN6qU9N1Ou", "get_stock_price"),
    ]
    assert calls[0].parsed_arguments() == {"city": "Edinburgh", "country": "GB", "units": "c"}
    assert calls[1].parsed_arguments() == {"ticker": "AAPL", "exchange": "NASDAQ"}
    assert {d.index for d in of(events, ToolCallDelta)} == {0, 1}
    assert events[-1].reason is FinishReason.TOOL_CALLS


async def test_openai_recorded_refusal(srv):
    events, exc = await replay(srv, "openai", "openai_chat_173417d55340.sse")
    assert exc is None
    assert text_of(events) == "I'm sorry, I can't assist with that request."
    assert events[-1].reason is FinishReason.REFUSAL


async def test_anthropic_recorded_text(srv):
    events, exc = await replay(srv, "anthropic", "anthropic_basic_response.sse")
    assert exc is None
    assert text_of(events) == "Hello there!"
    assert events[-2:] == [
        Usage(input_tokens=11, output_tokens=6),
        Finish(FinishReason.STOP, detail="end_turn", model_version="claude-3-opus-latest",
               request_id="msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK"),  # the recording's message id
    ]


async def test_anthropic_recording_without_message_stop_has_no_finish(srv):
    # Served as stored (no final blank line), the SDK never sees message_stop: the stream looks cut off.
    events, exc = await replay(srv, "anthropic", "anthropic_basic_response.sse", replay_fix_final_blank_line=False)
    assert exc is None
    assert text_of(events) == "Hello there!"
    assert of(events, Finish) == []


async def test_anthropic_recorded_tool_use(srv):
    events, exc = await replay(srv, "anthropic", "anthropic_tool_use_response.sse")
    assert exc is None
    assert text_of(events) == "I'll check the current weather in Paris for you."
    [call] = of(events, ToolCallEvent)
    assert call.call.id == "toolu_01NRLabsLyVHZPKxbKvkfSMn" and call.call.name == "get_weather"
    assert call.call.parsed_arguments() == {"location": "Paris"}
    assert "".join(d.arguments for d in of(events, ToolCallDelta)) == '{"location": "Paris"}'
    # The recording reports its cache figures (both zero): kept as reported, not as "unknown".
    assert events[-2] == Usage(input_tokens=377, output_tokens=65, cached_input_tokens=0, cache_write_tokens=0)
    assert events[-1].reason is FinishReason.TOOL_CALLS and events[-1].detail == "tool_use"


async def test_anthropic_recorded_incomplete_tool_input_is_not_a_call(srv):
    events, exc = await replay(srv, "anthropic", "anthropic_incomplete_partial_json_response.sse")
    assert exc is None
    assert text_of(events).startswith("I'll create a comprehensive tax guide")
    assert of(events, ToolCallDelta) and of(events, ToolCallEvent) == []
    assert events[-2] == Usage(input_tokens=450, output_tokens=124, cached_input_tokens=0, cache_write_tokens=0)
    assert events[-1].reason is FinishReason.LENGTH


async def test_anthropic_recorded_refusal(srv):
    events, exc = await replay(srv, "anthropic", "anthropic_refusal_response.sse")
    assert exc is None
    assert text_of(events) == ""
    finish = events[-1]
    assert finish.reason is FinishReason.REFUSAL
    assert "refused due to policy" in finish.detail


async def test_anthropic_recorded_thinking(srv):
    events, exc = await replay(srv, "anthropic", "anthropic_docs_thinking.sse")
    assert exc is None
    assert reasoning_of(events).startswith("Let me solve this step by step")
    assert "10,800 + 1,350 + 81 = 12,231" in reasoning_of(events)
    assert text_of(events) == "27 * 453 = 12,231"
    assert of(events, Usage) == []  # this docs example carries no usage at all
    assert events[-1].reason is FinishReason.STOP


async def test_gemini_recorded_text(srv):
    events, exc = await replay(srv, "gemini", "gemini_googleai_streaming-success-basic-reply-short.txt")
    assert exc is None
    assert text_of(events) == "The capital of Wyoming is **Cheyenne**.\n"
    assert events[-2:] == [
        Usage(input_tokens=7, output_tokens=10, reasoning_tokens=None),
        Finish(FinishReason.STOP, detail="STOP", model_version="gemini-2.0-flash"),
    ]


async def test_gemini_recorded_thoughts(srv):
    events, exc = await replay(srv, "gemini", "gemini_googleai_streaming-success-thinking-reply-thought-summary.txt")
    assert exc is None
    assert len(of(events, ReasoningDelta)) == 3
    assert reasoning_of(events).startswith("**Exploring Sky Color**")
    assert text_of(events).startswith("The sky is blue because")
    # candidatesTokenCount (48) leaves out the 540 thinking tokens, which are billed as output too.
    assert events[-2] == Usage(input_tokens=10, output_tokens=48 + 540, reasoning_tokens=540)
    assert events[-1].reason is FinishReason.STOP


async def test_gemini_recorded_function_call(srv):
    events, exc = await replay(
        srv, "gemini", "gemini_googleai_streaming-success-thinking-function-call-thought-summary-signature.txt"
    )
    assert exc is None
    assert reasoning_of(events).startswith("**Calculating the Days**")
    [call] = of(events, ToolCallEvent)
    assert call.call.name == "now" and call.call.parsed_arguments() == {}
    assert events[-2] == Usage(input_tokens=38, output_tokens=6 + 168, reasoning_tokens=168)
    assert events[-1] == Finish(FinishReason.TOOL_CALLS, detail="STOP", model_version="gemini-2.5-flash",
                                request_id="48SHaPHpHKbG-8YPtZCawAk")  # the recording's responseId


async def test_gemini_recorded_prompt_blocked_raises_a_clear_safety_error(srv):
    events, exc = await replay(srv, "gemini", "gemini_googleai_streaming-failure-prompt-blocked-safety.txt")
    assert isinstance(exc, SafetyBlocked)
    assert "blocked the prompt" in str(exc) and "SAFETY" in str(exc) and "Rephrase" in str(exc)
    assert events == []


async def test_gemini_recorded_recitation(srv):
    events, exc = await replay(srv, "gemini", "gemini_googleai_streaming-failure-recitation-no-content.txt")
    assert exc is None
    assert text_of(events) == "".join(f"text{i}" for i in range(1, 9))
    assert events[-1] == Finish(FinishReason.CONTENT_FILTER, detail="RECITATION", model_version="gemini-2.0-flash")


async def test_gemini_recorded_response_safety_block(srv):
    events, exc = await replay(srv, "gemini", "gemini_vertexai_streaming-failure-finish-reason-safety.txt")
    assert exc is None
    assert text_of(events) == "<redacted>"
    assert events[-2] == Usage(input_tokens=10, output_tokens=66, reasoning_tokens=None)
    assert events[-1].reason is FinishReason.CONTENT_FILTER and events[-1].detail == "SAFETY"


async def test_gemini_recorded_error_mid_stream(srv):
    # The recording repeats finishReason STOP on each chunk before the error: no Finish may leak out.
    events, exc = await replay(srv, "gemini", "gemini_vertexai_streaming-failure-error-mid-stream.txt")
    assert text_of(events) == "First Second "
    assert isinstance(exc, StreamError) and "cut off" in str(exc)
    assert type(exc.__cause__).__name__ == "ClientError" and exc.__cause__.code == 499
    assert of(events, Finish) == []


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_wrong_key_is_an_auth_error_naming_the_variable(srv, kind):
    events, exc = await collect(make(kind, srv, key="wrong-key"), "prov-any")
    assert isinstance(exc, AuthError)
    assert exc.env_var == KEY_VARS[kind]
    assert KEY_VARS[kind] in str(exc)
    assert exc.__cause__ is not None and not exc.retryable


async def test_compatible_endpoint_auth_error_names_its_own_variable(srv):
    provider = OpenAIProvider(api_key="wrong", base_url=srv.openai_base_url, name="groq", label="Groq",
                              key_env_var="GROQ_API_KEY")
    events, exc = await collect(provider, "prov-any")
    assert isinstance(exc, AuthError) and "GROQ_API_KEY" in str(exc) and "Groq" in str(exc)


@pytest.mark.parametrize("kind", KINDS)
async def test_unknown_model_is_model_not_found(srv, kind):
    events, exc = await collect(make(kind, srv), "no-such-model-xyz")
    assert isinstance(exc, ModelNotFound)
    assert exc.model == "no-such-model-xyz" and "no-such-model-xyz" in str(exc)


@pytest.mark.parametrize("kind", KINDS)
async def test_429_is_rate_limited_with_retry_after(srv, kind):
    model = scenario(srv, f"prov-429-{kind}", fail_status=429, retry_after=2)
    events, exc = await collect(make(kind, srv), model)
    assert isinstance(exc, RateLimited) and exc.retryable
    assert exc.retry_after == pytest.approx(2.0)
    assert len(requests_for(srv, model)) == 1  # the SDK did not retry: the turn runner owns retries


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", [500, 503, 529])
async def test_server_failures_are_overloaded_and_retryable(srv, kind, status):
    model = scenario(srv, f"prov-{status}-{kind}", fail_status=status, retry_after=1 if status == 503 else None)
    events, exc = await collect(make(kind, srv), model)
    assert isinstance(exc, Overloaded) and exc.retryable
    if status == 503:
        assert exc.retry_after == pytest.approx(1.0)
    assert len(requests_for(srv, model)) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_other_400_is_bad_request(srv, kind):
    model = scenario(srv, f"prov-400-{kind}", fail_status=400)
    events, exc = await collect(make(kind, srv), model)
    assert isinstance(exc, BadRequest) and not exc.retryable


@pytest.mark.parametrize("kind", KINDS)
async def test_drop_mid_stream_is_a_stream_error_after_the_text(srv, kind):
    model = scenario(srv, f"prov-drop-{kind}", tokens=10, drop_after=3)
    events, exc = await collect(make(kind, srv), model)
    assert text_of(events) == "".join(default_tokens(3))
    assert isinstance(exc, StreamError) and not exc.retryable
    assert "cut off" in str(exc)
    assert exc.__cause__ is not None  # APIConnectionError (openai) or raw httpx2.RemoteProtocolError
    assert of(events, Finish) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_drop_before_any_token_is_a_retryable_network_error(srv, kind):
    model = scenario(srv, f"prov-drop0-{kind}", tokens=10, drop_after=0)
    events, exc = await collect(make(kind, srv), model)
    assert text_of(events) == ""
    assert isinstance(exc, NetworkError) and exc.retryable


@pytest.mark.parametrize("kind", KINDS)
async def test_in_stream_error_after_tokens_is_a_stream_error(srv, kind):
    model = scenario(srv, f"prov-err-{kind}", tokens=10, error_after=4)
    events, exc = await collect(make(kind, srv), model)
    assert text_of(events) == "".join(default_tokens(4))
    assert isinstance(exc, StreamError) and not exc.retryable
    assert of(events, Finish) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_in_stream_overload_before_any_token_is_retryable(srv, kind):
    model = scenario(srv, f"prov-err0-{kind}", tokens=10, error_after=0)
    events, exc = await collect(make(kind, srv), model)
    assert text_of(events) == ""
    assert isinstance(exc, Overloaded) and exc.retryable


@pytest.mark.parametrize("kind", KINDS)
async def test_truncated_stream_has_no_finish(srv, kind):
    model = scenario(srv, f"prov-trunc-{kind}", tokens=10, truncate_after=4)
    events, exc = await collect(make(kind, srv), model)
    assert exc is None
    assert text_of(events) == "".join(default_tokens(4))
    assert of(events, Finish) == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("finish", ["length", "safety", "recitation"])
async def test_finish_reasons(srv, kind, finish):
    events, exc = await collect(make(kind, srv), finish)
    assert exc is None
    expected = {
        "length": FinishReason.LENGTH,
        # Anthropic's only safety stop is a refusal.
        "safety": FinishReason.REFUSAL if kind == "anthropic" else FinishReason.CONTENT_FILTER,
        "recitation": FinishReason.REFUSAL if kind == "anthropic" else FinishReason.CONTENT_FILTER,
    }[finish]
    assert events[-1].reason is expected
    if kind == "gemini" and finish != "length":
        assert events[-1].detail == finish.upper()


@pytest.mark.parametrize("kind", KINDS)
async def test_unreachable_server_is_a_network_error(kind):
    events, exc = await collect(make(kind, DEAD), "any-model")
    assert isinstance(exc, NetworkError) and exc.retryable
    assert "127.0.0.1:9" in str(exc)
    setting = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL", "gemini": "GOOGLE_GEMINI_BASE_URL"}[kind]
    assert setting in str(exc)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["cancel", "aclose"])
async def test_stopping_closes_the_http_stream(srv, kind, how):
    model = scenario(srv, f"prov-stop-{kind}-{how}", tokens=500, rate=100)
    provider = make(kind, srv)
    got_one = asyncio.Event()
    try:
        if how == "cancel":
            async def consume():
                async for event in provider.stream(model, HELLO, Params()):
                    if isinstance(event, TextDelta):
                        got_one.set()

            task = asyncio.create_task(consume())
            await asyncio.wait_for(got_one.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            stream = provider.stream(model, HELLO, Params())
            async for event in stream:
                if isinstance(event, TextDelta):
                    break
            await stream.aclose()
        record = await asyncio.to_thread(
            srv.wait_for, lambda: next((r for r in srv.stream_log if r.model == model and r.client_closed), None), 5
        )
        assert record.tokens_sent < 500
    finally:
        await provider.aclose()


# -- error classification details -----------------------------------------------------------------

WHO = Who("Vendor", "VENDOR_API_KEY", "m1")


@pytest.mark.parametrize(
    "failure",
    [
        Failure(400, "context_length_exceeded", "This model's maximum context length is 128000 tokens."),
        Failure(400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
        Failure(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."),
        Failure(413, "request_too_large", "Request exceeds the maximum allowed number of bytes."),
    ],
)
def test_context_length_wordings(failure):
    assert isinstance(classify(failure, WHO, started=False), ContextTooLong)


def test_classification_table():
    assert isinstance(classify(Failure(400, "API_KEY_INVALID", "API key not valid."), WHO, started=False), AuthError)
    assert isinstance(classify(Failure(403, "permission_error", "no"), WHO, started=False), AuthError)
    assert isinstance(classify(Failure(400, None, "model 'x' not found, try pulling it first"), WHO, started=False),
                      ModelNotFound)
    unsupported = classify(Failure(400, "invalid_request_error",
                                   "This model does not support it: 'temperature' is not supported."), WHO, started=False)
    assert isinstance(unsupported, BadRequest) and "temperature" in str(unsupported)
    quota = classify(Failure(429, "insufficient_quota", "You exceeded your current quota"), WHO, started=False)
    assert isinstance(quota, BadRequest) and not quota.retryable  # waiting will not bring credits back
    limited = classify(Failure(None, "rate_limit_error", "slow down", retry_after=3), WHO, started=False)
    assert isinstance(limited, RateLimited) and limited.retry_after == 3
    # After text was shown nothing is retryable: a retry would repeat it.
    late = classify(Failure(None, "overloaded_error", "Overloaded"), WHO, started=True)
    assert isinstance(late, StreamError) and not late.retryable


def test_retry_after_headers():
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "7"}) == 7.0
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None


def test_missing_sdk_is_an_actionable_not_configured():
    with pytest.raises(NotConfigured, match=r"pip install some-missing-sdk"):
        import_sdk("some_missing_sdk_for_parley", "some-missing-sdk", "Vendor")


# -- model listing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_list_models_reads_the_models_endpoint(srv, kind):
    scenario(srv, f"listed-{kind}-model", tokens=1)
    provider = make(kind, srv)
    try:
        models = await provider.list_models()
    finally:
        await provider.aclose()
    ids = [m.id for m in models]
    assert f"listed-{kind}-model" in ids and "gpt-test" in ids
    assert all(not i.startswith("models/") for i in ids)
    assert all(m.provider == provider.name for m in models)


@pytest.mark.parametrize("kind", KINDS)
async def test_list_models_failure_raises_a_chat_error(kind):
    provider = make(kind, DEAD)
    try:
        with pytest.raises(ChatError):
            await provider.list_models()
    finally:
        await provider.aclose()


def test_curated_lists_mark_context_windows():
    for provider in (OpenAIProvider(api_key="k"), AnthropicProvider(api_key="k"), GeminiProvider(api_key="k")):
        curated = provider.curated()
        assert curated and all(m.context_window for m in curated)
        assert all(m.provider == provider.name for m in curated)
        # Any model name works, with the provider's parameters.
        typed = provider.model_info("typed-by-hand")
        # OpenAI sends an effort only for the names of its reasoning models (gpt-4o and the like refuse one).
        expected = provider.accepts - {"effort"} if isinstance(provider, OpenAIProvider) else provider.accepts
        assert typed.id == "typed-by-hand" and typed.params == expected


# -- the OpenAI SSE reader (Parley parses the body itself: a dict per chunk, not a pydantic model) ---------


class _Body:
    """Just enough of an httpx response for `sse_data`: the body in the given pieces."""

    def __init__(self, *pieces: bytes):
        self.pieces = pieces
        self.read = 0

    async def aiter_bytes(self):
        for piece in self.pieces:
            self.read += 1
            yield piece


async def _events(*pieces: bytes) -> tuple[list[bytes], _Body]:
    from chat.providers.openai import sse_data

    body = _Body(*pieces)
    return [d async for d in sse_data(body)], body


async def test_sse_reader_joins_split_pieces_and_skips_comments():
    got, _ = await _events(b": OPENROUTER PROCESSING\n\n", b'data: {"a"', b': 1}\r\n\r', b"\ndata:{\"b\": 2}\n\n")
    assert [json.loads(d) for d in got] == [{"a": 1}, {"b": 2}]


async def test_sse_reader_joins_multiline_data_and_ignores_other_fields():
    got, _ = await _events(b"event: message\nid: 7\ndata: {\"x\":\ndata: 1}\nretry: 10\n\n")
    assert [json.loads(d) for d in got] == [{"x": 1}]


async def test_sse_reader_stops_at_done_and_reads_the_rest_of_the_body():
    got, body = await _events(b'data: {"n": 1}\n\ndata: [DONE]\n\n', b'data: {"after": true}\n\n', b"")
    assert [json.loads(d) for d in got] == [{"n": 1}]
    assert body.read == 3  # drained, so an HTTP/1.1 connection can go back to the pool


async def test_sse_reader_keeps_a_last_event_without_its_blank_line():
    got, _ = await _events(b'data: {"n": 1}\n\ndata: {"n": 2}')
    assert [json.loads(d) for d in got] == [{"n": 1}, {"n": 2}]


async def test_openai_streams_reuse_one_connection(srv):
    model = scenario(srv, "prov-reuse", tokens=20)
    provider = make("openai", srv)
    try:
        async def one() -> list[StreamEvent]:  # not collect(): it closes the provider
            return [e async for e in provider.stream(model, HELLO, Params())]

        await one()  # connects
        before = srv.connections_accepted
        for _ in range(3):
            assert of(await one(), Finish)
        assert srv.connections_accepted == before
    finally:
        await provider.aclose()
