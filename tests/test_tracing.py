"""OpenTelemetry traces (chat/tracing.py): the SDK's in-memory exporter behind chat.tracing.setup, the real SDKs
against the fake provider server, real storage (SQLite, and PostgreSQL when TEST_DATABASE_URL is set)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import aclosing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from chat import tracing
from chat.registry import Registry, Settings
from chat.tools import toolbox_from_env
from chat.turn import Turn
from chat.types import Message, Params
from compare.batch import Prompt, run_batch
from core.chat import ChatTurns, Update
from core.compare_run import CompareRun, Pane
from core.config import AppConfig
from core.ratelimit import Identity
from core.services import Services
from storage.db import init_db, make_engine
from tests.apphelpers import ROOT, app_env
from tests.fakes import Scenario
from tests.storage.conftest import pg_schema_engine

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
PROMPT = "tell me a secret about zebras"


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[sa.Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'trace.db'}")
        init_db(engine)
        yield engine
        engine.dispose()
        return
    with pg_schema_engine() as engine:
        init_db(engine)
        yield engine


@pytest.fixture
def services(fake_server, engine) -> Iterator[Services]:
    values = app_env(fake_server, "unused")
    built = Services.build(AppConfig.from_env(values), Registry.from_settings(Settings.from_env(values)), engine)
    yield built
    built.close()


def _install(env: dict[str, str]) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    assert tracing.setup(env, processor=SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, content off (the default), spans kept in memory."""
    exporter = _install({})
    yield exporter
    tracing.shutdown()


@pytest.fixture
def content_spans() -> Iterator[InMemorySpanExporter]:
    exporter = _install({tracing.CONTENT_VAR: "true"})
    yield exporter
    tracing.shutdown()


async def chat(turns: ChatTurns, text: str = PROMPT, **kwargs) -> list:
    who = f"user:{uuid.uuid4().hex[:8]}"
    kwargs.setdefault("model", "openai:gpt-test")
    async with aclosing(turns.send(owner=who, identity=Identity(who), text=text, **kwargs)) as events:
        return [e async for e in events]


def named(exporter: InMemorySpanExporter, prefix: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def every_value(span: ReadableSpan) -> str:
    """All attribute and event values of a span, as one string (to look for content that must not be there)."""
    values = [str(v) for v in (span.attributes or {}).values()]
    values += [str(v) for e in span.events for v in (e.attributes or {}).values()]
    return " ".join(values)


# -- one chat turn -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "provider_name"), [("openai:gpt-test", "openai"), ("anthropic:claude-test", "anthropic"),
                                                      ("gemini:gemini-test", "gcp.gemini")])
async def test_a_chat_turn_is_one_client_span_with_the_genai_attributes(services, spans, model, provider_name):
    events = await chat(ChatTurns(services), model=model)
    result = [e for e in events if isinstance(e, Update)][-1].result
    [span] = spans.get_finished_spans()
    a = span.attributes
    assert span.name == f"chat {model.split(':')[1]}" and span.kind is SpanKind.CLIENT
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == provider_name
    assert a["gen_ai.request.model"] == model.split(":")[1]
    assert a["gen_ai.request.max_tokens"] == Params().max_tokens
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] == result.input_tokens and a["gen_ai.usage.output_tokens"] == result.output_tokens
    assert a["gen_ai.usage.output_tokens"] > 0 and a["parley.usage.estimated"] is False
    if result.model_version:
        assert a["gen_ai.response.model"] == result.model_version
    assert a["parley.ttft_ms"] == round(result.ttft_ms, 1) and a["parley.attempts"] == 1 and a["parley.role"] == "chat"
    assert span.status.status_code is StatusCode.UNSET and "error.type" not in a
    # No content, no owner, no conversation by default.
    assert not span.events
    shown = every_value(span)
    assert "zebras" not in shown and "lorem0" not in shown and "user:" not in shown
    assert "gen_ai.conversation.id" not in a


async def test_reported_cache_and_reasoning_tokens_are_attributes(services, spans, fake_server):
    fake_server.set_scenario("trace-reasoning", Scenario(reasoning="thinking it over", tokens=4))
    turns = ChatTurns(services)
    thought = [e for e in await chat(turns, model="gemini:trace-reasoning") if isinstance(e, Update)][-1].result
    cached = [e for e in await chat(turns, model="anthropic:claude-test") if isinstance(e, Update)][-1].result
    gemini, anthropic = spans.get_finished_spans()
    # What the provider reported is there under the conventions' names, and nothing it did not report.
    assert gemini.attributes["gen_ai.usage.reasoning.output_tokens"] == thought.reasoning_tokens > 0
    assert "gen_ai.usage.cache_read.input_tokens" not in gemini.attributes  # Gemini reported no cache figures
    assert anthropic.attributes["gen_ai.usage.cache_read.input_tokens"] == cached.cached_input_tokens is not None
    assert anthropic.attributes["gen_ai.usage.cache_creation.input_tokens"] == cached.cache_write_tokens is not None
    assert "gen_ai.usage.reasoning.output_tokens" not in anthropic.attributes


async def test_an_error_turn_sets_error_status_and_type(services, spans):
    events = await chat(ChatTurns(services), model="openai:error-after-5")
    result = [e for e in events if isinstance(e, Update)][-1].result
    assert result.error is not None
    [span] = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == result.error.kind
    assert span.attributes["gen_ai.response.finish_reasons"] == ("error",)


async def test_a_stopped_turn_ends_its_span_as_cancelled(services, spans, fake_server):
    fake_server.set_scenario("trace-slow", Scenario(tokens=200, rate=20))
    turns = ChatTurns(services)
    who = "user:stopper"
    async with aclosing(turns.send(owner=who, identity=Identity(who), text=PROMPT, model="openai:trace-slow")) as events:
        async for e in events:
            if isinstance(e, Update) and e.result.text:
                break  # Stop: the surface closes the generator
    [span] = spans.get_finished_spans()
    assert span.attributes["gen_ai.response.finish_reasons"] == ("cancelled",)
    assert span.status.status_code is StatusCode.UNSET  # Stop is not a failure


async def test_content_is_a_details_event_only_with_the_setting(services, content_spans):
    await chat(ChatTurns(services), system_prompt="Be brief.")
    [span] = content_spans.get_finished_spans()
    [event] = span.events
    assert event.name == "gen_ai.client.inference.operation.details"
    inputs = json.loads(event.attributes["gen_ai.input.messages"])
    outputs = json.loads(event.attributes["gen_ai.output.messages"])
    assert inputs[-1] == {"role": "user", "parts": [{"type": "text", "content": PROMPT}]}
    assert json.loads(event.attributes["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be brief."}]
    assert outputs[0]["role"] == "assistant" and outputs[0]["finish_reason"] == "stop"
    assert outputs[0]["parts"][-1]["content"].startswith("lorem0")


# -- tools, compare, batch, judges ---------------------------------------------------------------------


async def test_a_tool_call_is_a_child_span_of_its_turn(services, spans, fake_server):
    services.toolbox = toolbox_from_env({})
    fake_server.set_scenario("trace-calc", Scenario(tool_calls=[{"name": "calculator", "arguments": {"expression": "6*7"}}],
                                                    then=Scenario(text="It is 42.", tokens=3)))
    await chat(ChatTurns(services), model="openai:trace-calc", tools=True)
    [turn] = named(spans, "chat ")
    [tool] = named(spans, "execute_tool ")
    assert tool.name == "execute_tool calculator" and tool.kind is SpanKind.INTERNAL
    assert tool.parent is not None and tool.parent.span_id == turn.context.span_id
    assert tool.context.trace_id == turn.context.trace_id
    assert tool.attributes["gen_ai.tool.name"] == "calculator" and tool.attributes["parley.tool.status"] == "done"
    assert "gen_ai.tool.call.arguments" not in tool.attributes and "gen_ai.tool.call.result" not in tool.attributes
    assert turn.attributes["parley.tool_calls"] == 1 and turn.attributes["parley.tools"] is True


async def test_tool_arguments_and_results_only_with_the_content_setting(services, content_spans, fake_server):
    services.toolbox = toolbox_from_env({})
    fake_server.set_scenario("trace-calc2", Scenario(tool_calls=[{"name": "calculator", "arguments": {"expression": "6*7"}}],
                                                     then=Scenario(text="It is 42.", tokens=3)))
    await chat(ChatTurns(services), model="openai:trace-calc2", tools=True)
    [tool] = named(content_spans, "execute_tool ")
    assert json.loads(tool.attributes["gen_ai.tool.call.arguments"]) == {"expression": "6*7"}
    assert tool.attributes["gen_ai.tool.call.result"].strip() == "42"
    [turn] = named(content_spans, "chat ")
    inputs = json.loads(turn.events[0].attributes["gen_ai.input.messages"])
    assert inputs[-1]["parts"] == [{"type": "text", "content": PROMPT}]


async def test_a_failing_tool_call_has_error_status(services, spans, fake_server):
    services.toolbox = toolbox_from_env({})
    fake_server.set_scenario("trace-badtool", Scenario(tool_calls=[{"name": "no_such_tool", "arguments": {}}],
                                                       then=Scenario(text="Sorry.", tokens=1)))
    await chat(ChatTurns(services), model="openai:trace-badtool", tools=True)
    [tool] = named(spans, "execute_tool ")
    assert tool.status.status_code is StatusCode.ERROR and tool.attributes["error.type"] == "tool_error"


async def test_compare_panes_are_children_of_a_compare_span(services, spans):
    panes = [Pane(*services.registry.resolve(ref), Params()) for ref in ("openai:gpt-test", "anthropic:claude-test")]
    await CompareRun(services, "user:cmp", PROMPT, panes).run()
    [run] = named(spans, "compare")
    children = named(spans, "chat ")
    assert sorted(s.name for s in children) == ["chat claude-test", "chat gpt-test"]
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in children)
    assert all(s.context.trace_id == run.context.trace_id for s in children)
    assert all(s.attributes["parley.role"] == "compare" for s in children)
    assert run.attributes["parley.panes"] == 2 and run.attributes["parley.blind"] is False


async def test_batch_pairs_are_children_of_a_batch_span(services, spans, tmp_path):
    await run_batch(services.registry, [Prompt("a", "one"), Prompt("b", "two")], ["openai:gpt-test"], out_path=tmp_path / "r.jsonl")
    [run] = named(spans, "batch")
    pairs = named(spans, "chat ")
    assert len(pairs) == 2 and all(s.parent is not None and s.parent.span_id == run.context.span_id for s in pairs)
    assert all(s.attributes["parley.role"] == "batch" and s.attributes["gen_ai.response.finish_reasons"] == ("stop",)
               for s in pairs)
    assert run.attributes["parley.pairs"] == 2


async def test_judge_call_opens_a_span_in_one_line(services, spans):
    provider, info = services.registry.resolve("openai:gpt-test")
    turn = Turn(provider, info, [Message(role="user", content="judge this")], Params())
    with tracing.judge_call(turn, judge="strict"):
        await turn.run()
    [span] = spans.get_finished_spans()
    assert span.attributes["parley.role"] == "judge" and span.attributes["parley.judge"] == "strict"
    assert span.attributes["gen_ai.usage.output_tokens"] > 0
    turn = Turn(provider, info, [Message(role="user", content="judge this")], Params())
    with pytest.raises(ValueError), tracing.judge_call(turn):
        raise ValueError("the judge's reply could not be parsed")
    failed = spans.get_finished_spans()[-1]
    assert failed.status.status_code is StatusCode.ERROR and failed.attributes["error.type"] == "ValueError"


async def test_a_judge_pair_is_two_judge_spans(services, spans):
    from compare.judge_run import JudgePanel

    panel = JudgePanel({"openai:gpt-test": services.registry.resolve("openai:gpt-test")})
    await panel.pair("openai:gpt-test", "which is better?", ("m1", "one answer"), ("m2", "another answer"))
    judged = spans.get_finished_spans()
    assert [s.name for s in judged] == ["chat gpt-test", "chat gpt-test"]  # both orders
    assert all(s.attributes["parley.role"] == "judge" and s.attributes["parley.judge"] == "openai:gpt-test" for s in judged)


# -- off, and no noise when on ---------------------------------------------------------------------------


async def test_the_global_provider_stays_unset_so_the_anthropic_sdk_sends_no_traceparent(services, spans, fake_server):
    fake_server.clear()
    await chat(ChatTurns(services), model="anthropic:claude-test")
    # FastAPI (under Gradio) and the Anthropic SDK trace only with a global provider: Parley never sets one.
    assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
    posted = [r for r in fake_server.requests if r.provider == "anthropic" and r.method == "POST"]
    assert posted and not any("traceparent" in r.headers for r in posted)
    assert [s.name for s in spans.get_finished_spans()] == ["chat claude-test"]


async def test_off_the_hooks_do_nothing(services):
    tracing.shutdown()
    assert not tracing.enabled()
    assert not tracing.setup({"OTEL_EXPORTER_OTLP_ENDPOINT": ""})  # no endpoint: stays off
    assert not tracing.setup({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"})
    provider, info = services.registry.resolve("openai:gpt-test")
    turn = Turn(provider, info, [Message(role="user", content="hi")], Params())
    assert tracing.start(turn) is None and tracing.group("compare") is None and tracing.start_all([turn], parent=None, role="compare") == []
    assert tracing.start_tool(None, "calculator", "c1", "{}") is None
    tracing.end(None)
    tracing.end_tool(None, result="", error=None, status="done")
    events = await chat(ChatTurns(services))
    assert isinstance(events[-1], Update) and events[-1].result.text


def test_off_nothing_of_the_sdk_is_imported():
    """A fresh interpreter: the app's modules and a set-up without an endpoint import no opentelemetry SDK."""
    code = ("import sys, os\n"
            "os.environ.pop('OTEL_EXPORTER_OTLP_ENDPOINT', None); os.environ.pop('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', None)\n"
            "import app, core.chat, core.compare_run, compare.batch, chat.toolloop\n"
            "from chat import tracing\n"
            "assert tracing.setup() is False\n"
            "sdk = sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk') or m.startswith('opentelemetry.exporter'))\n"
            "print('SDK', sdk)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "SDK []" in done.stdout


class _Collector(BaseHTTPRequestHandler):
    """A minimal OTLP/HTTP receiver: keeps each POST's path and body."""

    posts: ClassVar[list[tuple[str, bytes, str]]] = []

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Collector.posts.append((self.path, body, self.headers.get("Authorization", "")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


async def test_with_an_endpoint_spans_go_out_as_otlp_http(services, monkeypatch):
    """The real set-up path: the OTLP/HTTP exporter posts protobuf to {endpoint}/v1/traces, headers from the env."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Collector.posts.clear()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)  # the exporter reads the process environment
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Basic%20cGs6c2s=")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    try:
        assert tracing.setup({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        await chat(ChatTurns(services))
    finally:
        tracing.shutdown()  # flushes the BatchSpanProcessor
        server.shutdown()
    [(path, body, auth)] = _Collector.posts
    assert path == "/v1/traces" and auth == "Basic cGs6c2s="
    sent = ExportTraceServiceRequest.FromString(body)
    [resource] = sent.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
    names = [span.name for scope in resource.scope_spans for span in scope.spans]
    assert service == "parley" and names == ["chat gpt-test"]
