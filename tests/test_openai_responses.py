"""OpenAI's Responses API through the real openai SDK against the fake's `/v1/responses` (and the documentation's
recorded stream), the effort/temperature controls per model, and the provider request ids of all three providers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from chat.errors import AuthError, Overloaded, RateLimited, StreamError
from chat.providers.anthropic import AnthropicProvider
from chat.providers.gemini import GeminiProvider
from chat.providers.openai import OpenAIProvider
from chat.providers.openai_responses import ReasoningCall
from chat.registry import Registry
from chat.settings import Settings
from chat.toolloop import ToolLoop
from chat.tools import tool
from chat.turn import Turn
from chat.types import (
    Finish,
    FinishReason,
    Message,
    Params,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolCallEvent,
    ToolSpec,
    Usage,
)
from tests.fakes import FakeServer, Scenario, default_tokens
from tests.fakes.wire import encrypted_reasoning

HELLO = [Message(role="system", content="be brief"), Message(role="user", content="hi")]
PARAMS = Params(temperature=0.3, top_p=0.9, max_tokens=77, seed=5, effort="low")
WEATHER = ToolSpec("get_weather", "The weather in a city.",
                   {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


@pytest.fixture
def srv(fake_server: FakeServer) -> FakeServer:
    return fake_server


def official(srv: FakeServer, **kw: Any) -> OpenAIProvider:
    """api.openai.com's rules (reasoning models go through the Responses API) at the fake's address."""
    return OpenAIProvider(api_key=kw.pop("key", "test-key"), base_url=srv.openai_base_url, official=True, **kw)


def scenario(srv: FakeServer, name: str, **knobs: Any) -> str:
    srv.set_scenario(name, Scenario(**knobs))
    return name


def bodies(srv: FakeServer, model: str) -> list[dict[str, Any]]:
    return [r.json for r in srv.requests if r.model == model and r.path.endswith("/responses")]


async def collect(provider: OpenAIProvider, model: str, messages: list[Message] | None = None,
                  params: Params | None = None, tools: list[ToolSpec] | None = None,
                  ) -> tuple[list[StreamEvent], BaseException | None]:
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


# -- which API, and the exact request body ----------------------------------------------------------------


def test_reasoning_models_on_api_openai_com_use_the_responses_api():
    provider = OpenAIProvider(api_key="k")
    assert provider.uses_responses("o3-mini") and provider.uses_responses("gpt-5.4")
    assert not provider.uses_responses("gpt-4.1") and not provider.uses_responses("gpt-5.1-chat-latest")
    assert not provider.uses_responses("o1-mini")  # an early reasoning model without an effort or summaries
    proxy = OpenAIProvider(api_key="k", base_url="http://127.0.0.1:9/v1", openai_names=True)
    assert not proxy.uses_responses("o3-mini")  # a proxy may not have /responses: Chat Completions unless told
    assert OpenAIProvider(api_key="k", base_url="http://127.0.0.1:9/v1", api="responses").uses_responses("llama3.2")
    assert not OpenAIProvider(api_key="k", api="chat").uses_responses("o3-mini")
    with pytest.raises(ValueError):
        OpenAIProvider(api_key="k", api="completions")


async def test_the_request_body_of_a_reasoning_model(srv):
    model = scenario(srv, "o3-resp-body", tokens=2)
    events, exc = await collect(official(srv), model, params=PARAMS, tools=[WEATHER])
    assert exc is None and text_of(events) == "".join(default_tokens(2))
    [body] = bodies(srv, model)
    assert body == {
        "model": model,
        "instructions": "be brief",
        "input": [{"role": "user", "content": "hi"}],
        "stream": True,
        "store": False,  # stateless: nothing of the conversation is kept at OpenAI
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "low", "summary": "auto"},
        "max_output_tokens": 77,  # no temperature, top_p or seed: reasoning models refuse them
        "tools": [{"type": "function", "name": "get_weather", "description": "The weather in a city.",
                   "parameters": WEATHER.parameters, "strict": False}],
    }
    assert not [r for r in srv.requests if r.model == model and r.path.endswith("/chat/completions")]


async def test_a_responses_endpoint_sends_sampling_to_a_model_that_is_not_a_reasoning_one(srv):
    model = scenario(srv, "resp-sampling", tokens=2)
    provider = OpenAIProvider(api_key="test-key", base_url=srv.openai_base_url, name="proxy", api="responses")
    assert provider.model_info(model).params == {"temperature", "top_p", "max_tokens"}  # the API takes no seed
    events, exc = await collect(provider, model, params=PARAMS)
    assert exc is None
    [body] = bodies(srv, model)
    assert (body["temperature"], body["top_p"], body["max_output_tokens"]) == (0.3, 0.9, 77)
    assert not {"seed", "reasoning", "include"} & set(body)


async def test_files_go_as_input_parts(srv):
    from tests.test_provider_attachments import B64_IMAGE, B64_PDF, IMAGE, NOTES_BLOCK, PDF, TEXT, ask

    model = scenario(srv, "o3-resp-files", tokens=2)  # o3 reads images and PDFs
    events, exc = await collect(official(srv), model, messages=ask(IMAGE, PDF, TEXT))
    assert exc is None
    [body] = bodies(srv, model)
    assert body["input"] == [{"role": "user", "content": [
        {"type": "input_text", "text": "What is in these?"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{B64_IMAGE}", "detail": "auto"},
        {"type": "input_file", "filename": PDF.name, "file_data": f"data:application/pdf;base64,{B64_PDF}"},
        {"type": "input_text", "text": NOTES_BLOCK},
    ]}]


# -- the stream ----------------------------------------------------------------------------------------


async def test_reasoning_summary_then_text_then_usage_with_reasoning_tokens(srv):
    model = scenario(srv, "o3-resp-think", tokens=3, reasoning="Weigh it. Then answer.")
    events, exc = await collect(official(srv), model, params=Params(effort="high"))
    assert exc is None
    assert reasoning_of(events) == "Weigh it. Then answer."
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert all(isinstance(e, ReasoningDelta) for e in events[:first_text])
    assert text_of(events) == "".join(default_tokens(3))
    usage, finish = events[-2:]
    # output_tokens includes the reasoning (4 summary words here), as OpenAI bills it.
    assert usage == Usage(input_tokens=usage.input_tokens, output_tokens=3 + 4, reasoning_tokens=4,
                          cached_input_tokens=0)
    assert usage.input_tokens and usage.input_tokens > 0
    assert isinstance(finish, Finish) and finish.reason is FinishReason.STOP and finish.detail == "completed"
    assert finish.model_version == model and finish.request_id and finish.request_id.startswith("resp_")


async def test_the_documentation_example_replayed_ends_with_the_final_text(srv):
    """Its one delta ("Hi") is not the final text: the rest comes as one more delta, so the saved reply is the
    text `output_text.done` gives."""
    model = scenario(srv, "o3-resp-doc", replay="openai_responses_doc_example.sse")
    events, exc = await collect(official(srv), model)
    assert exc is None
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hi", " there! How can I assist you today?"]
    assert events[-2:] == [
        Usage(input_tokens=37, output_tokens=11, reasoning_tokens=0),  # no input_tokens_details: cached unknown
        Finish(FinishReason.STOP, detail="completed", model_version="gpt-5.4",
               request_id="resp_67c9fdcecf488190bdd9a0409de3a1ec07b8b0ad4e5eb654"),
    ]


def test_a_final_text_that_does_not_extend_the_deltas_leaves_them_as_shown():
    from chat.providers.openai_responses import EventReader

    reader = EventReader()
    shown = reader.feed({"type": "response.output_text.delta", "item_id": "m", "content_index": 0, "delta": "Hello"})
    assert shown == [TextDelta("Hello")]
    assert reader.feed({"type": "response.output_text.done", "item_id": "m", "content_index": 0, "text": "Goodbye"}) == []


async def test_a_function_call_streams_then_completes(srv):
    model = scenario(srv, "o3-resp-call", tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}],
                     reasoning="Need the weather.")
    events, exc = await collect(official(srv), model, tools=[WEATHER])
    assert exc is None
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    [call] = [e.call for e in events if isinstance(e, ToolCallEvent)]
    assert deltas[0].name == "get_weather" and deltas[0].id == call.id and {d.index for d in deltas} == {0}
    assert "".join(d.arguments for d in deltas) == call.arguments and call.parsed_arguments() == {"city": "Oslo"}
    assert isinstance(call, ReasoningCall)
    [item] = call.items
    assert item["type"] == "reasoning" and item["encrypted_content"] == encrypted_reasoning("Need the weather.")
    assert item["summary"] == [{"type": "summary_text", "text": "Need the weather."}] and "status" not in item
    assert events[-1].reason is FinishReason.TOOL_CALLS


class City(BaseModel):
    city: str


async def test_a_tool_loop_sends_the_reasoning_back_before_its_call(srv):
    """Step 2's input: the question, the reasoning item (encrypted content and all), the function_call, its
    output. The fake refuses a reasoning item without its following item or, with store=False, without its
    encrypted content, as the API does."""
    model = scenario(srv, "o3-resp-loop", tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}],
                     reasoning="Need the weather.", then=Scenario(text="It is 12 C in Oslo."))

    @tool(name="get_weather")
    def get_weather(args: City) -> str:
        """The weather in a city."""
        return f"12 C in {args.city}"

    provider = official(srv)
    loop = ToolLoop(provider, provider.model_info(model), HELLO, Params(effort="medium"), tools=[get_weather])
    try:
        result = await loop.run()
    finally:
        await provider.aclose()
    assert result.error is None and result.finish_reason is FinishReason.STOP
    assert result.text == "It is 12 C in Oslo."
    first, second = bodies(srv, model)
    [call] = result.messages[0].tool_calls
    assert isinstance(call, ReasoningCall)
    assert second["input"] == [
        {"role": "user", "content": "hi"},
        {"id": call.items[0]["id"], "type": "reasoning",
         "summary": [{"type": "summary_text", "text": "Need the weather."}],
         "encrypted_content": encrypted_reasoning("Need the weather.")},
        {"type": "function_call", "call_id": call.id, "name": "get_weather", "arguments": '{"city":"Oslo"}'},
        {"type": "function_call_output", "call_id": call.id, "output": "12 C in Oslo"},
    ]
    assert second["store"] is False and second["include"] == first["include"] == ["reasoning.encrypted_content"]
    assert second["reasoning"] == {"effort": "medium", "summary": "auto"}
    assert result.usage.reasoning_tokens == 3  # both steps' usage: step 1 reasoned 3 words, step 2 none


async def test_the_fake_refuses_a_reasoning_item_sent_without_its_call(srv):
    """The check above is worth something only if the fake refuses what the API refuses."""
    model = scenario(srv, "o3-resp-orphan", tokens=2)
    orphan = Message(role="assistant", content="", tool_calls=(ReasoningCall(
        id="call_1", name="get_weather", arguments="{}",
        items=({"id": "rs_1", "type": "reasoning", "summary": []},)),))  # no encrypted content
    answer = Message(role="tool", tool_call_id="call_1", content="12 C")
    events, exc = await collect(official(srv), model, messages=[*HELLO, orphan, answer])
    assert exc is not None and "not persisted when `store` is set to false" in str(exc)


async def test_an_unverified_organization_gets_replies_without_summaries(srv, caplog):
    """OpenAI refuses reasoning summaries (400, param reasoning.summary) to organizations it has not verified:
    the reply goes on without one, and later requests no longer ask."""
    model = scenario(srv, "o3-resp-unverified", tokens=3, reasoning="Hidden.", unverified_org=True)
    provider = official(srv)
    try:
        for _ in range(2):
            events: list[StreamEvent] = []
            async for e in provider.stream(model, HELLO, Params(effort="low")):
                events.append(e)
            assert text_of(events) == "".join(default_tokens(3)) and events[-1].reason is FinishReason.STOP
            assert reasoning_of(events) == ""  # it reasoned (billed) but shows no summary
            assert events[-2].reasoning_tokens == 1
    finally:
        await provider.aclose()
    sent = [b.get("reasoning") for b in bodies(srv, model)]
    assert sent == [{"effort": "low", "summary": "auto"}, {"effort": "low"}, {"effort": "low"}]
    assert "organization not verified" in caplog.text


async def test_other_400s_are_not_retried(srv):
    model = scenario(srv, "o3-resp-400", fail_status=400)
    events, exc = await collect(official(srv), model)
    assert exc is not None and len(bodies(srv, model)) == 1


# -- errors, mapped as for Chat Completions ----------------------------------------------------------------


async def test_a_wrong_key_is_an_auth_error(srv):
    events, exc = await collect(official(srv, key="wrong"), scenario(srv, "o3-resp-key", tokens=2))
    assert isinstance(exc, AuthError) and "OPENAI_API_KEY" in str(exc)


async def test_429_is_rate_limited_with_retry_after(srv):
    model = scenario(srv, "o3-resp-429", fail_status=429, retry_after=2)
    events, exc = await collect(official(srv), model)
    assert isinstance(exc, RateLimited) and exc.retry_after == 2


async def test_500_is_overloaded(srv):
    events, exc = await collect(official(srv), scenario(srv, "o3-resp-500", fail_status=500))
    assert isinstance(exc, Overloaded) and exc.retryable


async def test_an_error_event_mid_stream_is_a_stream_error_after_the_text(srv):
    events, exc = await collect(official(srv), scenario(srv, "o3-resp-err", tokens=6, error_after=3))
    assert text_of(events) == "".join(default_tokens(3))
    assert isinstance(exc, StreamError) and not exc.retryable
    assert not [e for e in events if isinstance(e, Finish)]


async def test_an_error_event_before_any_token_is_retryable(srv):
    events, exc = await collect(official(srv), scenario(srv, "o3-resp-err0", tokens=6, error_after=0))
    assert isinstance(exc, Overloaded) and exc.retryable and not events


async def test_response_failed_is_mapped_like_an_error_event(srv):
    events, exc = await collect(official(srv), scenario(srv, "o3-resp-failed", tokens=3, finish="failed"))
    assert text_of(events) == "".join(default_tokens(3))
    assert isinstance(exc, StreamError) and "server had an error" in str(exc)
    events, exc = await collect(official(srv), scenario(srv, "o3-resp-failed0", text="", finish="failed"))
    assert isinstance(exc, Overloaded) and exc.retryable  # nothing shown yet: the runner may retry


@pytest.mark.parametrize(("finish", "reason", "detail"), [
    ("length", FinishReason.LENGTH, "max_output_tokens"),
    ("content_filter", FinishReason.CONTENT_FILTER, "content_filter"),
])
async def test_an_incomplete_response_says_why(srv, finish, reason, detail):
    events, exc = await collect(official(srv), scenario(srv, f"o3-resp-{finish}", tokens=4, finish=finish))
    assert exc is None and text_of(events) == "".join(default_tokens(4))
    assert isinstance(events[-2], Usage) and events[-2].output_tokens == 4
    assert (events[-1].reason, events[-1].detail) == (reason, detail)


async def test_a_stream_cut_before_its_closing_event_has_no_finish(srv):
    events, exc = await collect(official(srv), scenario(srv, "o3-resp-cut", tokens=6, truncate_after=2))
    assert exc is None and text_of(events) == "".join(default_tokens(2))
    assert not [e for e in events if isinstance(e, (Finish, Usage))]


async def test_a_dropped_connection_mid_stream_is_a_stream_error(srv):
    events, exc = await collect(official(srv), scenario(srv, "o3-resp-drop", tokens=10, drop_after=3))
    assert text_of(events) == "".join(default_tokens(3))
    assert isinstance(exc, StreamError) and "cut off" in str(exc) and exc.__cause__ is not None


async def test_stopping_closes_the_http_stream(srv):
    model = scenario(srv, "o3-resp-stop", tokens=500, rate=100)
    provider = official(srv)
    got_one = asyncio.Event()

    async def consume() -> None:
        async for event in provider.stream(model, HELLO, Params()):
            if isinstance(event, TextDelta):
                got_one.set()

    try:
        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_one.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        record = await asyncio.to_thread(
            srv.wait_for, lambda: next((r for r in srv.stream_log if r.model == model and r.client_closed), None), 5
        )
        assert record.tokens_sent < 500
    finally:
        await provider.aclose()


# -- controls per model ---------------------------------------------------------------------------------


def controls(registry: Registry, ref: str) -> frozenset[str]:
    """What the sidebar shows for a model (ui/sidebar.py and compare/batch.py read the same)."""
    provider, info = registry.resolve(ref)
    return (info.params or provider.accepts) & provider.accepts


MODELS_TOML = """
[[endpoint]]
name = "router"
base_url = "http://127.0.0.1:9/v1"
key_env = ""
models = ["openai/o3-mini", "o4-mini", "llama3.2"]

[[endpoint]]
name = "withfx"
base_url = "http://127.0.0.1:9/v1"
key_env = ""
effort = true
models = ["deepseek-r1"]

[[endpoint]]
name = "resp"
base_url = "http://127.0.0.1:9/v1"
key_env = ""
api = "responses"
models = ["llama3.2"]
"""


def test_each_model_gets_its_own_controls(tmp_path):
    (tmp_path / "models.toml").write_text(MODELS_TOML)
    registry = Registry.from_settings(Settings.from_env({"OPENAI_API_KEY": "k"}, cwd=tmp_path))
    assert controls(registry, "openai:o3-mini") == {"max_tokens", "effort"}  # no temperature
    assert controls(registry, "openai:gpt-4o") == {"temperature", "top_p", "max_tokens", "seed"}  # no effort
    # A compatible endpoint's OpenAI reasoning model, by name (a router's openai/ prefix too), gets the effort.
    assert controls(registry, "router:openai/o3-mini") == {"max_tokens", "effort"}
    assert controls(registry, "router:o4-mini") == {"max_tokens", "effort"}
    assert controls(registry, "router:some-typed-o3-pro") == {"temperature", "top_p", "max_tokens", "seed"}
    assert controls(registry, "router:llama3.2") == {"temperature", "top_p", "max_tokens", "seed"}
    assert controls(registry, "withfx:deepseek-r1") == {"temperature", "top_p", "max_tokens", "seed", "effort"}
    assert controls(registry, "resp:llama3.2") == {"temperature", "top_p", "max_tokens"}
    provider, _ = registry.resolve("router:openai/o3-mini")
    body = provider.request("openai/o3-mini", HELLO, PARAMS)  # type: ignore[attr-defined]
    assert body["reasoning_effort"] == "low" and body["max_tokens"] == 77  # a compatible server's max_tokens
    assert not {"temperature", "top_p", "seed"} & set(body)
    assert registry.resolve("resp:llama3.2")[0].uses_responses("llama3.2")  # type: ignore[attr-defined]
    assert not registry.resolve("router:o4-mini")[0].uses_responses("o4-mini")  # type: ignore[attr-defined]


def test_the_api_style_settings(tmp_path):
    (tmp_path / "models.toml").write_text(MODELS_TOML.replace('api = "responses"', 'api = "graphql"'))
    env = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_STYLE": "responses"}
    settings = Settings.from_env(env, cwd=tmp_path)
    assert any("`api` must be" in p for p in settings.problems)
    registry = Registry.from_settings(settings)
    assert registry.resolve("openai:o3-mini")[0].uses_responses("o3-mini")  # type: ignore[attr-defined]
    bad = Settings.from_env({**env, "OPENAI_API_STYLE": "soap"}, cwd=tmp_path)
    assert bad.openai_api_style == "auto" and any("OPENAI_API_STYLE" in p for p in bad.problems)


# -- provider request ids, for the reproducibility card --------------------------------------------------------


async def test_chat_completions_request_id_is_the_x_request_id_header_and_reaches_the_turn(srv):
    model = scenario(srv, "rid-chat", tokens=2)
    provider = OpenAIProvider(api_key="test-key", base_url=srv.openai_base_url)
    turn = Turn(provider, provider.model_info(model), HELLO, Params())
    try:
        result = await turn.run()
    finally:
        await provider.aclose()
    [request] = [r for r in srv.requests if r.model == model]
    assert request.request_id and result.request_id == request.request_id


async def test_anthropic_request_id_is_the_message_id(srv):
    model = scenario(srv, "rid-claude", tokens=2)
    provider = AnthropicProvider(api_key="test-key", base_url=srv.anthropic_base_url)
    events: list[StreamEvent] = []
    try:
        async for e in provider.stream(model, HELLO, Params()):
            events.append(e)
    finally:
        await provider.aclose()
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.request_id and finish.request_id.startswith("msg_")


async def test_gemini_request_id_is_the_response_id(srv):
    model = scenario(srv, "rid-gemini", tokens=2)
    provider = GeminiProvider(api_key="test-key", base_url=srv.gemini_base_url)
    events: list[StreamEvent] = []
    try:
        async for e in provider.stream(model, HELLO, Params()):
            events.append(e)
    finally:
        await provider.aclose()
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.request_id and len(finish.request_id) >= 16
