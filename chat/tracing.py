"""OpenTelemetry traces of model calls, in the GenAI semantic conventions; off unless an OTLP endpoint is set.

`setup()` (app start-up) turns tracing on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set:
an OTLP/HTTP exporter behind a BatchSpanProcessor, service.name "parley", the standard OTEL_* variables read by
the SDK. Off, nothing of opentelemetry is imported and every hook returns at its first line (`_tracer is None`),
so no span object is made. The hooks sit at a turn's start and end, never in the stream loop.

Spans: `chat {model}` (CLIENT) per chat turn, compare pane, batch pair and judge call, a pane's and a pair's
under a `compare` / `batch` span; `execute_tool {name}` (INTERNAL) per tool call, under its turn. Parents are
passed by hand, not through the ambient context: a turn's generator is resumed by whichever task the surface
uses, where an attached context could not be detached.

The provider is private (never the global one): FastAPI (under Gradio) and the Anthropic SDK trace only with a
global TracerProvider, so they add no spans of their own (FastAPI: about 23 per chat turn) and Anthropic sends
no `traceparent` upstream. No owner, conversation id or content by default; prompts and replies only with
`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`, as the conventions' details event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.trace import Span, Tracer

    from chat.types import Message

log = logging.getLogger("parley.tracing")

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
CONTENT_VAR = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# "true", and the values newer GenAI instrumentations take for the same switch.
_CONTENT_ON = {"true", "span_only", "event_only", "span_and_event"}
DETAILS_EVENT = "gen_ai.client.inference.operation.details"

#: gen_ai.provider.name of Parley's providers; an OpenAI-compatible endpoint keeps its own name (custom value).
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini", "demo": "parley.demo"}
_REQUEST_PARAMS = {"temperature": "gen_ai.request.temperature", "top_p": "gen_ai.request.top_p",
                   "max_tokens": "gen_ai.request.max_tokens", "seed": "gen_ai.request.seed"}
MAX_DESCRIPTION = 500  # an error's message in the span status, cut to this many characters

# None = tracing off: the one check every hook makes.
_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_content = False


class Traced:
    """A span Parley opened: a reply's (`reply` set), a group's (`compare`, `batch`) or a tool call's."""

    __slots__ = ("ended", "reply", "span")

    def __init__(self, span: Span, reply: Any = None):
        self.span = span
        self.reply = reply
        self.ended = False


def enabled() -> bool:
    return _tracer is not None


def setup(env: Mapping[str, str] | None = None, *, processor: SpanProcessor | None = None) -> bool:
    """Turn tracing on when the environment names an OTLP endpoint (or with `processor`, for tests); True if on.

    Without an endpoint nothing changes (a tracer set up before stays). `OTEL_SDK_DISABLED=true` keeps it off.
    """
    env = os.environ if env is None else env
    if processor is None:
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or not any(env.get(v, "").strip() for v in ENDPOINT_VARS):
            return False
        # The exporter reads the OTEL_EXPORTER_OTLP_* variables (endpoint, headers, timeout) itself.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        processor = BatchSpanProcessor(OTLPSpanExporter())
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by Resource.create; ours only fills the gap.
    named = env.get("OTEL_SERVICE_NAME", "").strip() or "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", "")
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": "parley"}))
    provider.add_span_processor(processor)
    shutdown()
    global _tracer, _provider, _content
    _provider = provider
    _tracer = provider.get_tracer("parley")
    _content = env.get(CONTENT_VAR, "").strip().lower() in _CONTENT_ON
    return True


def shutdown() -> None:
    """Send what is waiting and turn tracing off (tests; the provider also flushes when the process exits)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


# -- the hooks: each returns at once when tracing is off ---------------------------------------------


def start(reply: Any, *, parent: Traced | None = None, role: str = "chat") -> Traced | None:
    """Open the `chat {model}` span of a reply (a chat.turn.Turn or chat.toolloop.ToolLoop) not yet started.

    `role` says which surface made the call (chat, compare, batch, judge). A ToolLoop gets the span as its
    `trace`, the parent of its tool calls' spans.
    """
    if _tracer is None:
        return None
    try:
        return _start(_tracer, reply, parent, role)
    except Exception:  # a tracing bug must never stop a turn
        log.exception("could not open a span")
        return None


def end(traced: Traced | None, error: BaseException | None = None) -> None:
    """Close a span from `start` or `group` (a reply's with its result's figures); a second call does nothing."""
    if traced is None or traced.ended:
        return
    traced.ended = True
    end_time = None
    try:
        if traced.reply is not None:
            end_time = _result_attributes(traced)
        # Stop and a closed stream are how a turn is cancelled, not failures.
        if error is not None and not isinstance(error, (GeneratorExit, asyncio.CancelledError)):
            _fail(traced.span, type(error).__qualname__, str(error))
            traced.span.record_exception(error)
    except Exception:  # it runs in the turn's `finally`: a tracing bug must never stop the turn being saved
        log.exception("could not record a span's result")
    finally:
        traced.span.end(end_time=end_time)


def start_all(replies: Sequence[Any], *, parent: Traced | None, role: str) -> list[Traced | None]:
    """`start` for each reply (compare panes); an empty list when tracing is off."""
    if _tracer is None:
        return []
    return [start(r, parent=parent, role=role) for r in replies]


def end_all(spans: Sequence[Traced | None]) -> None:
    for traced in spans:
        end(traced)


def group(name: str, attributes: Mapping[str, Any] | None = None) -> Traced | None:
    """Open the INTERNAL parent span of several replies (`compare`, `batch`)."""
    if _tracer is None:
        return None
    from opentelemetry.trace import SpanKind

    # No gen_ai.operation.name: "compare" and "batch" are Parley's, not operations the conventions define.
    span = _tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=dict(attributes or {}))
    return Traced(span)


def start_tool(parent: Traced | None, name: str, call_id: str, arguments: str) -> Traced | None:
    """Open the `execute_tool {name}` span of one tool call, under its reply's span."""
    if _tracer is None:
        return None
    from opentelemetry.trace import SpanKind, set_span_in_context

    attributes: dict[str, Any] = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                                  "gen_ai.tool.type": "function"}
    if call_id:
        attributes["gen_ai.tool.call.id"] = call_id
    if _content:
        attributes["gen_ai.tool.call.arguments"] = arguments
    context = set_span_in_context(parent.span) if parent is not None else None
    return Traced(_tracer.start_span(f"execute_tool {name}", context=context, kind=SpanKind.INTERNAL, attributes=attributes))


def end_tool(traced: Traced | None, *, result: str | None, error: str | None, status: str) -> None:
    """Close a tool call's span: a tool's error (unknown tool, bad arguments, timeout) sets error status."""
    if traced is None or traced.ended:
        return
    traced.ended = True
    span = traced.span
    span.set_attribute("parley.tool.status", status)
    if status == "done" and error is not None:
        _fail(span, "tool_error", error)
    if _content and result is not None:
        span.set_attribute("gen_ai.tool.call.result", result)
    span.end()


@contextmanager
def judge_call(reply: Any, *, parent: Traced | None = None, judge: str = "") -> Iterator[Traced | None]:
    """`with tracing.judge_call(turn, judge="gpt-judge"): await turn.run()`: a judge's model call as a span
    (role judge), ended with the reply's result when the block ends, or with the exception that left it."""
    if _tracer is None:
        yield None
        return
    traced = _start(_tracer, reply, parent, "judge")
    if judge:
        traced.span.set_attribute("parley.judge", judge)
    try:
        yield traced
    except BaseException as e:
        end(traced, e)
        raise
    end(traced)


# -- when on --------------------------------------------------------------------------------------


def _start(tracer: Tracer, reply: Any, parent: Traced | None, role: str) -> Traced:
    from opentelemetry.trace import SpanKind, set_span_in_context

    info = reply.model
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER_NAMES.get(info.provider, info.provider),
        "gen_ai.request.model": info.id,
        "parley.role": role,
    }
    sent = reply.params.for_provider(info.params or reply.provider.accepts)
    for key, name in _REQUEST_PARAMS.items():
        if sent.get(key) is not None:
            attributes[name] = sent[key]
    if hasattr(reply, "trace"):
        attributes["parley.tools"] = bool(reply.tools)
    context = set_span_in_context(parent.span) if parent is not None else None
    span = tracer.start_span(f"chat {info.id}", context=context, kind=SpanKind.CLIENT, attributes=attributes)
    traced = Traced(span, reply)
    if hasattr(reply, "trace"):  # a ToolLoop: its tool calls' spans go under this one
        reply.trace = traced
    return traced


def _fail(span: Span, kind: str, message: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, message[:MAX_DESCRIPTION]))


def _result_attributes(traced: Traced) -> int | None:
    """Write a reply's result on its span; the span's end time: when the reply ended (panes end before their run)."""
    span, reply = traced.span, traced.reply
    r = reply.result
    finish = r.finish_reason.value if r.finish_reason is not None else "cancelled"
    values: dict[str, Any] = {"gen_ai.response.finish_reasons": [finish]}
    if r.model_version:
        values["gen_ai.response.model"] = r.model_version
    steps = getattr(r, "steps", None)
    last = steps[-1] if steps else r
    if getattr(last, "request_id", None):
        values["gen_ai.response.id"] = last.request_id
    usage = r.usage
    for name, value in (("gen_ai.usage.input_tokens", usage.input_tokens),
                        ("gen_ai.usage.output_tokens", None if usage.estimated else usage.output_tokens),
                        ("gen_ai.usage.cache_read.input_tokens", usage.cached_input_tokens),
                        ("gen_ai.usage.cache_creation.input_tokens", usage.cache_write_tokens),
                        ("gen_ai.usage.reasoning.output_tokens", usage.reasoning_tokens)):
        if value is not None:
            values[name] = value
    values["parley.usage.estimated"] = usage.estimated  # the provider reported no usage (stopped, failed)
    if r.ttft_ms is not None:
        values["parley.ttft_ms"] = round(r.ttft_ms, 1)
    values["parley.attempts"] = sum(s.attempts for s in steps) if steps is not None else r.attempts
    if steps is not None:
        values["parley.tool_calls"] = len(r.tools)
    span.set_attributes(values)
    if r.error is not None:
        _fail(span, r.error.kind, r.error.message)
    if _content:
        span.add_event(DETAILS_EVENT, _details(reply, r, finish))
    ended = getattr(r, "ended", None)
    if ended is None:
        return None
    return time.time_ns() - max(0, int((time.perf_counter() - ended) * 1e9))


def _details(reply: Any, r: Any, finish: str) -> dict[str, str]:
    """The conventions' opt-in content: system instructions, input and output messages, as JSON strings."""
    messages: Sequence[Message] = getattr(reply, "messages", None) or getattr(reply, "history", None) or ()
    system = [{"type": "text", "content": m.content} for m in messages if m.role == "system"]
    inputs = [_message(m) for m in messages if m.role != "system"]
    parts: list[dict[str, Any]] = []
    if r.reasoning:
        parts.append({"type": "reasoning", "content": r.reasoning})
    parts.append({"type": "text", "content": r.text})
    out = {"gen_ai.input.messages": json.dumps(inputs, ensure_ascii=False),
           "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": parts, "finish_reason": finish}],
                                                ensure_ascii=False)}
    if system:
        out["gen_ai.system_instructions"] = json.dumps(system, ensure_ascii=False)
    return out


def _message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "parts": [{"type": "tool_call_response", "id": m.tool_call_id, "response": m.content}]}
    parts: list[dict[str, Any]] = []
    if m.content:
        parts.append({"type": "text", "content": m.content})
    # A file's bytes stay out of the trace: its type and content hash say which file it was.
    parts.extend({"type": "file", "mime_type": a.mime, "file_id": a.sha256} for a in m.attachments)
    parts.extend({"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments} for c in m.tool_calls)
    return {"role": m.role, "parts": parts}


__all__ = ["CONTENT_VAR", "ENDPOINT_VARS", "PROVIDER_NAMES", "Traced", "enabled", "end", "end_all", "end_tool", "group",
           "judge_call", "setup", "shutdown", "start", "start_all", "start_tool"]
