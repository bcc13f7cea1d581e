"""OpenAI's Responses API: the request body from our messages, and its stream events turned into Parley's events.

No SDK import here: chat.providers.openai sends the body through the SDK and hands this module each event's JSON.

Stateless by design: every request is sent with `store=False` and asks for `reasoning.encrypted_content`, so
nothing of a conversation is kept at OpenAI, and a tool loop sends the model's reasoning items back itself. They
ride on the first function call that followed them (`ReasoningCall.items`) through the loop's history, as Gemini's
thought signatures do, and go back right before that call: a reasoning item sent without its following item is
refused ("provided without its required following item").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from chat.providers import _attachments as files
from chat.providers._common import system_text
from chat.providers.openai_models import reasoning_params
from chat.types import (
    Finish,
    FinishReason,
    Message,
    ModelInfo,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    ToolSpec,
    Usage,
)

#: What makes a stateless reasoning request resumable across tool steps.
INCLUDE_REASONING = "reasoning.encrypted_content"

_INCOMPLETE = {
    "max_output_tokens": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
}


class ReasoningCall(ToolCall):
    """A function call with the reasoning items that came before it in the same response (opaque dicts,
    encrypted content included), sent back before the call on the loop's next step."""

    items: tuple[dict[str, Any], ...] = Field(default=(), repr=False)


class StreamFailed(Exception):
    """A `response.failed` or `error` event: the error object (code, message), for openai.py to map."""

    def __init__(self, error: dict[str, Any]):
        self.error = error
        super().__init__(error.get("message") or "An error occurred during streaming")


# -- the request ------------------------------------------------------------------------------------------


def responses_input(
    messages: Sequence[Message], info: ModelInfo | None, label: str
) -> tuple[str | None, list[dict[str, Any]]]:
    """(instructions, input items): system messages become the instructions, the rest input items.

    Files stay `_attachments.Blob`s (materialize the body before sending). Reasoning text is never sent back:
    only a call's opaque reasoning items, which the API needs to continue a tool loop.
    """
    prepared = files.prepared_items(messages, info, files.OPENAI, label, "openai")
    items: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.role == "system":
            continue
        if i in prepared:
            items.append({"role": m.role, "content": _content(m.content, prepared[i])})
        elif m.role == "tool":
            items.append({"type": "function_call_output", "call_id": m.tool_call_id or "", "output": m.content})
        elif m.role == "assistant" and m.tool_calls:
            if m.content:
                items.append({"role": "assistant", "content": m.content})
            for c in m.tool_calls:
                if isinstance(c, ReasoningCall):
                    items.extend(dict(item) for item in c.items)
                items.append({"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments or "{}"})
        else:
            items.append({"role": m.role, "content": m.content})
    return system_text(list(messages)), items


def _content(text: str, prepared: Sequence[files.Item]) -> list[dict[str, object]]:
    """A user message with files in the Responses shape: input_text, input_image, input_file parts."""
    parts: list[dict[str, object]] = [{"type": "input_text", "text": text}] if text else []
    for item in prepared:
        if isinstance(item, files.Text):
            parts.append({"type": "input_text", "text": item.text})
        elif item.att.kind == "image":
            parts.append({"type": "input_image", "image_url": item.data_url(), "detail": "auto"})
        else:
            parts.append({"type": "input_file", "filename": item.att.name, "file_data": item.data_url()})
    return parts


def responses_body(
    model: str, info: ModelInfo, messages: Sequence[Message], sent: dict[str, Any], label: str,
    tools: Sequence[ToolSpec] = (),
) -> dict[str, Any]:
    """The body for `responses.create` (files still as Blobs); `sent` holds the parameter values the model takes.

    A reasoning model (by name, or one with an effort control) is asked for a summary of its reasoning, which
    the reasoning block shows, and for its reasoning encrypted, so that the next tool step can send it back.
    """
    instructions, items = responses_input(messages, info, label)
    body: dict[str, Any] = {"model": model, "input": items, "stream": True, "store": False}
    if instructions:
        body["instructions"] = instructions
    for key in ("temperature", "top_p"):
        if key in sent:
            body[key] = sent[key]
    if "max_tokens" in sent:
        body["max_output_tokens"] = sent["max_tokens"]
    if "effort" in info.params or reasoning_params(model) is not None:
        reasoning: dict[str, Any] = {"summary": "auto"}
        if "effort" in sent:
            reasoning["effort"] = sent["effort"]
        body["reasoning"] = reasoning
        body["include"] = [INCLUDE_REASONING]
    if tools:
        body["tools"] = responses_tools(tools)
    return body


def responses_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Function tools in the Responses shape (flat, not under `function`); not strict, as in Chat Completions:
    strict mode would refuse Parley's schemas, which leave optional arguments out of `required`."""
    return [
        {"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters, "strict": False}
        for t in tools
    ]


# -- the stream ---------------------------------------------------------------------------------------------


class EventReader:
    """Turns Responses stream events (each the decoded JSON of one SSE `data:`) into our events; Usage and
    Finish come from the closing event.

    The final text wins over the deltas when it extends them: the documentation's own example streams one
    delta ("Hi") and then `output_text.done` with the whole text, so the missing rest is sent as one more
    TextDelta and the saved reply is the text the API says it gave. A final text that does not extend what was
    shown cannot be unsaid, so the deltas stand then.
    """

    def __init__(self) -> None:
        self.response_id: str | None = None
        self.model: str | None = None
        self.finish: Finish | None = None
        self.usage: Usage | None = None
        self.refused = False
        self._texts: dict[tuple[str, int], list[str]] = {}  # (item_id, content_index) -> pieces streamed
        self._calls: dict[str, int] = {}  # function_call item id -> our call index
        self._reasoning: list[dict[str, Any]] = []  # reasoning items not yet followed by a call
        self._called = 0
        self._summary_parts = 0

    def feed(self, event: dict[str, Any]) -> list[StreamEvent]:
        kind = event.get("type")
        if kind == "response.output_text.delta":  # the hot path: one per token
            return self._text(event, event.get("delta") or "")
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            delta = event.get("delta") or ""
            return [ReasoningDelta(delta)] if isinstance(delta, str) and delta else []
        if kind == "response.reasoning_summary_part.added":
            self._summary_parts += 1
            return [ReasoningDelta("\n\n")] if self._summary_parts > 1 else []  # summaries come in paragraphs
        if kind == "response.output_text.done":
            return self._text_done(event)
        if kind == "response.refusal.delta":
            self.refused = True
            delta = event.get("delta") or ""
            return [TextDelta(delta)] if isinstance(delta, str) and delta else []
        if kind == "response.output_item.added":
            return self._item_added(_dict(event.get("item")))
        if kind == "response.function_call_arguments.delta":
            index = self._calls.get(event.get("item_id") or "")
            delta = event.get("delta") or ""
            return [ToolCallDelta(index=index, arguments=delta)] if index is not None and isinstance(delta, str) \
                and delta else []
        if kind == "response.output_item.done":
            return self._item_done(_dict(event.get("item")))
        if kind in ("response.created", "response.in_progress"):
            self._response(_dict(event.get("response")))
        elif kind in ("response.completed", "response.incomplete"):
            self._end(_dict(event.get("response")), kind == "response.incomplete")
        elif kind == "response.failed":
            response = _dict(event.get("response"))
            self._response(response)
            raise StreamFailed(_dict(response.get("error")) or {"code": "server_error"})
        elif kind == "error":
            raise StreamFailed({"code": event.get("code"), "message": event.get("message"), "param": event.get("param")})
        return []

    def _text(self, event: dict[str, Any], delta: Any) -> list[StreamEvent]:
        if not isinstance(delta, str) or not delta:
            return []
        key = (event.get("item_id") or "", event.get("content_index") or 0)
        pieces = self._texts.get(key)
        if pieces is None:
            self._texts[key] = [delta]
        else:
            pieces.append(delta)  # joined once, at output_text.done (adding strings per token is quadratic)
        return [TextDelta(delta)]

    def _text_done(self, event: dict[str, Any]) -> list[StreamEvent]:
        final = event.get("text")
        key = (event.get("item_id") or "", event.get("content_index") or 0)
        shown = "".join(self._texts.get(key, ()))
        if isinstance(final, str) and len(final) > len(shown) and final.startswith(shown):
            self._texts[key] = [final]
            return [TextDelta(final[len(shown):])]
        return []

    def _item_added(self, item: dict[str, Any]) -> list[StreamEvent]:
        if item.get("type") != "function_call":
            return []
        index = self._called
        self._called += 1
        self._calls[item.get("id") or f"fc_{index}"] = index
        return [ToolCallDelta(index=index, id=item.get("call_id") or None, name=item.get("name") or None)]

    def _item_done(self, item: dict[str, Any]) -> list[StreamEvent]:
        kind = item.get("type")
        if kind == "reasoning":
            # Sent back as it came (encrypted content and all), less the output-only status and unset fields.
            self._reasoning.append({k: v for k, v in item.items() if k != "status" and v is not None})
            return []
        if kind != "function_call" or item.get("status", "completed") == "incomplete":
            return []  # cut-off arguments are not a call to make
        index = self._calls.get(item.get("id") or "")
        call = ReasoningCall(
            id=item.get("call_id") or f"call_{index if index is not None else self._called}",
            name=item.get("name") or "",
            arguments=item.get("arguments") or "{}",
            items=tuple(self._reasoning),
        )
        self._reasoning = []
        return [ToolCallEvent(call)]

    def _response(self, response: dict[str, Any]) -> None:
        self.response_id = response.get("id") or self.response_id
        self.model = response.get("model") or self.model

    def _end(self, response: dict[str, Any], incomplete: bool) -> None:
        self._response(response)
        usage = response.get("usage")
        if isinstance(usage, dict):
            self.usage = responses_usage(usage)
        if incomplete:
            why = _dict(response.get("incomplete_details")).get("reason") or "incomplete"
            reason, detail = _INCOMPLETE.get(why, FinishReason.LENGTH), why
        elif self.refused:
            reason, detail = FinishReason.REFUSAL, "refusal"
        elif self._called:
            reason, detail = FinishReason.TOOL_CALLS, "function_call"
        else:
            reason, detail = FinishReason.STOP, response.get("status") or "completed"
        self.finish = Finish(reason, detail=detail, model_version=self.model, request_id=self.response_id)

    def end(self) -> list[StreamEvent]:
        """Usage then Finish, once the stream is over; nothing of the kind when it ended without a closing event."""
        events: list[StreamEvent] = []
        if self.usage is not None:
            events.append(self.usage)
        if self.finish is not None:
            events.append(self.finish)
        return events


def responses_usage(u: dict[str, Any]) -> Usage:
    """Responses usage in our contract: input_tokens already includes the cached part, output_tokens the reasoning."""
    return Usage(
        input_tokens=_count(u.get("input_tokens")),
        output_tokens=_count(u.get("output_tokens")),
        reasoning_tokens=_count(_dict(u.get("output_tokens_details")).get("reasoning_tokens")),
        cached_input_tokens=_count(_dict(u.get("input_tokens_details")).get("cached_tokens")),
    )


def _dict(value: Any) -> dict[str, Any]:
    """A JSON object of the stream, or an empty one where the server sent null or something else."""
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


__all__ = ["EventReader", "INCLUDE_REASONING", "ReasoningCall", "StreamFailed", "responses_body", "responses_input",
           "responses_tools", "responses_usage"]
