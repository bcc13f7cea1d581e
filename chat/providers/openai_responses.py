"""OpenAI's Responses API: the request body from our messages, and its stream events turned into Parley's events.

No SDK import here: chat.providers.openai sends the body through `client.responses.create(stream=True)` and hands
this module each typed event the SDK yields (read by attribute, so a field the installed SDK does not know yet
does no harm).

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
    """Turns Responses stream events into our events; Usage and Finish come from the closing event.

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
        self._texts: dict[tuple[str, int], str] = {}  # (item_id, content_index) -> text streamed
        self._calls: dict[str, int] = {}  # function_call item id -> our call index
        self._reasoning: list[dict[str, Any]] = []  # reasoning items not yet followed by a call
        self._called = 0
        self._summary_parts = 0

    def feed(self, event: Any) -> list[StreamEvent]:
        kind = getattr(event, "type", None)
        if kind == "response.output_text.delta":
            return self._text(event, getattr(event, "delta", "") or "")
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            delta = getattr(event, "delta", "") or ""
            return [ReasoningDelta(delta)] if delta else []
        if kind == "response.reasoning_summary_part.added":
            self._summary_parts += 1
            return [ReasoningDelta("\n\n")] if self._summary_parts > 1 else []  # summaries come in paragraphs
        if kind == "response.output_text.done":
            return self._text_done(event)
        if kind == "response.refusal.delta":
            self.refused = True
            delta = getattr(event, "delta", "") or ""
            return [TextDelta(delta)] if delta else []
        if kind == "response.output_item.added":
            return self._item_added(getattr(event, "item", None))
        if kind == "response.function_call_arguments.delta":
            index = self._calls.get(getattr(event, "item_id", "") or "")
            delta = getattr(event, "delta", "") or ""
            return [ToolCallDelta(index=index, arguments=delta)] if index is not None and delta else []
        if kind == "response.output_item.done":
            return self._item_done(getattr(event, "item", None))
        if kind in ("response.created", "response.in_progress"):
            self._response(getattr(event, "response", None))
        elif kind in ("response.completed", "response.incomplete"):
            self._end(getattr(event, "response", None), kind == "response.incomplete")
        elif kind == "response.failed":
            response = getattr(event, "response", None)
            self._response(response)
            raise StreamFailed(_as_dict(getattr(response, "error", None)) or {"code": "server_error"})
        elif kind == "error":
            raise StreamFailed({"code": getattr(event, "code", None), "message": getattr(event, "message", None),
                                "param": getattr(event, "param", None)})
        return []

    def _text(self, event: Any, delta: str) -> list[StreamEvent]:
        if not delta:
            return []
        key = (getattr(event, "item_id", "") or "", getattr(event, "content_index", 0) or 0)
        self._texts[key] = self._texts.get(key, "") + delta
        return [TextDelta(delta)]

    def _text_done(self, event: Any) -> list[StreamEvent]:
        final = getattr(event, "text", None)
        key = (getattr(event, "item_id", "") or "", getattr(event, "content_index", 0) or 0)
        shown = self._texts.get(key, "")
        if isinstance(final, str) and len(final) > len(shown) and final.startswith(shown):
            self._texts[key] = final
            return [TextDelta(final[len(shown):])]
        return []

    def _item_added(self, item: Any) -> list[StreamEvent]:
        if getattr(item, "type", None) != "function_call":
            return []
        index = self._called
        self._called += 1
        self._calls[getattr(item, "id", None) or f"fc_{index}"] = index
        return [ToolCallDelta(index=index, id=getattr(item, "call_id", None) or None,
                              name=getattr(item, "name", None) or None)]

    def _item_done(self, item: Any) -> list[StreamEvent]:
        kind = getattr(item, "type", None)
        if kind == "reasoning":
            dumped = _as_dict(item)
            dumped.pop("status", None)  # output-only; the input item has no status
            self._reasoning.append(dumped)
            return []
        if kind != "function_call" or getattr(item, "status", "completed") == "incomplete":
            return []  # cut-off arguments are not a call to make
        index = self._calls.get(getattr(item, "id", None) or "")
        call = ReasoningCall(
            id=getattr(item, "call_id", None) or f"call_{index if index is not None else self._called}",
            name=getattr(item, "name", "") or "",
            arguments=getattr(item, "arguments", None) or "{}",
            items=tuple(self._reasoning),
        )
        self._reasoning = []
        return [ToolCallEvent(call)]

    def _response(self, response: Any) -> None:
        if response is None:
            return
        self.response_id = getattr(response, "id", None) or self.response_id
        self.model = getattr(response, "model", None) or self.model

    def _end(self, response: Any, incomplete: bool) -> None:
        self._response(response)
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.usage = responses_usage(usage)
        if incomplete:
            why = getattr(getattr(response, "incomplete_details", None), "reason", None) or "incomplete"
            reason, detail = _INCOMPLETE.get(why, FinishReason.LENGTH), why
        elif self.refused:
            reason, detail = FinishReason.REFUSAL, "refusal"
        elif self._called:
            reason, detail = FinishReason.TOOL_CALLS, "function_call"
        else:
            reason, detail = FinishReason.STOP, getattr(response, "status", None) or "completed"
        self.finish = Finish(reason, detail=detail, model_version=self.model, request_id=self.response_id)

    def end(self) -> list[StreamEvent]:
        """Usage then Finish, once the stream is over; nothing of the kind when it ended without a closing event."""
        events: list[StreamEvent] = []
        if self.usage is not None:
            events.append(self.usage)
        if self.finish is not None:
            events.append(self.finish)
        return events


def responses_usage(u: Any) -> Usage:
    """Responses usage in our contract: input_tokens already includes the cached part, output_tokens the reasoning."""
    return Usage(
        input_tokens=_count(getattr(u, "input_tokens", None)),
        output_tokens=_count(getattr(u, "output_tokens", None)),
        reasoning_tokens=_count(getattr(getattr(u, "output_tokens_details", None), "reasoning_tokens", None)),
        cached_input_tokens=_count(getattr(getattr(u, "input_tokens_details", None), "cached_tokens", None)),
    )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _as_dict(obj: Any) -> dict[str, Any]:
    """An SDK model (or a dict) as a plain JSON-ready dict without unset fields."""
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return {k: v for k, v in obj.items() if v is not None}
    dump = getattr(obj, "model_dump", None)
    return dump(mode="json", exclude_none=True) if callable(dump) else {}


__all__ = ["EventReader", "INCLUDE_REASONING", "ReasoningCall", "StreamFailed", "responses_body", "responses_input",
           "responses_tools", "responses_usage"]
