"""Reading an Anthropic Messages stream: its events turned into Parley's events (no SDK here).

chat.providers.anthropic feeds the decoded events in; this keeps what must wait for the end of the
stream (tool-call arguments, thinking signatures, the stop reason and usage).
"""

from __future__ import annotations

import json
from typing import Any

from chat.types import (
    Finish,
    FinishReason,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    Usage,
)

_FINISH = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.REFUSAL,
}


class ThinkingCall(ToolCall):
    """A tool call with the signed thinking blocks that came before it in the same reply.

    With thinking on, the API refuses the next step of a tool loop (400) unless the assistant message
    that asked for the tool comes back with its thinking blocks, signature and all, unchanged.
    """

    thinking: tuple[dict[str, Any], ...] = ()


class EventReader:
    """Turns raw Messages stream events into ours. Finish comes only with message_stop."""

    def __init__(self) -> None:
        self.input_tokens: int | None = None  # the uncached rest of the prompt, as Anthropic counts it
        self.output_tokens: int | None = None
        self.cache_read: int | None = None
        self.cache_write: int | None = None
        self.stop_reason: str | None = None
        self.stop_detail: str | None = None
        self.model: str | None = None
        self.message_id: str | None = None  # the provider's id for this reply, for the reproducibility card
        self._blocks: dict[int, dict[str, Any]] = {}  # content block index -> tool_use state
        self._tool_count = 0
        self._thinking: dict[int, dict[str, Any]] = {}  # content block index -> thinking block being streamed
        self._signed: list[dict[str, Any]] = []  # finished thinking blocks, for the next tool call

    def feed(self, event: Any) -> list[StreamEvent]:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            message = event.message
            self.model = getattr(message, "model", None)
            self.message_id = getattr(message, "id", None) or None
            usage = getattr(message, "usage", None)
            if usage is not None:
                self._take_usage(usage)
            return []
        if kind == "content_block_start":
            block = event.content_block
            if getattr(block, "type", None) in ("tool_use", "server_tool_use"):
                index = self._tool_count
                self._tool_count += 1
                initial = getattr(block, "input", None)
                self._blocks[event.index] = {"index": index, "id": block.id, "name": block.name, "args": "",
                                             "initial": initial}
                return [ToolCallDelta(index=index, id=block.id, name=block.name, arguments="")]
            if getattr(block, "type", None) == "thinking":
                self._thinking[event.index] = {"type": "thinking", "thinking": getattr(block, "thinking", "") or "",
                                               "signature": getattr(block, "signature", "") or ""}
            elif getattr(block, "type", None) == "redacted_thinking":
                self._thinking[event.index] = {"type": "redacted_thinking", "data": getattr(block, "data", "")}
            if getattr(block, "type", None) == "text" and getattr(block, "text", ""):
                return [TextDelta(block.text)]
            return []
        if kind == "content_block_delta":
            delta = event.delta
            dtype = getattr(delta, "type", None)
            if dtype == "text_delta":
                return [TextDelta(delta.text)] if delta.text else []
            if dtype == "thinking_delta":
                if event.index in self._thinking:
                    self._thinking[event.index]["thinking"] += delta.thinking or ""
                return [ReasoningDelta(delta.thinking)] if delta.thinking else []
            if dtype == "signature_delta":
                if event.index in self._thinking:
                    self._thinking[event.index]["signature"] = delta.signature
                return []
            if dtype == "input_json_delta":
                call = self._blocks.get(event.index)
                if call is None:
                    return []
                call["args"] += delta.partial_json
                return [ToolCallDelta(index=call["index"], arguments=delta.partial_json)] if delta.partial_json else []
            return []  # citations_delta, unknown kinds
        if kind == "content_block_stop":
            thinking = self._thinking.pop(event.index, None)
            if thinking is not None:
                self._signed.append(thinking)
                return []
            call = self._blocks.pop(event.index, None)
            if call is None:
                return []
            args = call["args"] or (json.dumps(call["initial"]) if call["initial"] else "{}")
            if self._signed:
                done = ThinkingCall(id=call["id"], name=call["name"], arguments=args, thinking=tuple(self._signed))
                self._signed = []
                return [ToolCallEvent(done)]
            return [ToolCallEvent(ToolCall(id=call["id"], name=call["name"], arguments=args))]
        if kind == "message_delta":
            delta = event.delta
            self.stop_reason = getattr(delta, "stop_reason", None) or self.stop_reason
            details = getattr(delta, "stop_details", None)
            explanation = getattr(details, "explanation", None) if details is not None else None
            if explanation is None and isinstance(details, dict):
                explanation = details.get("explanation")
            self.stop_detail = explanation
            usage = getattr(event, "usage", None)
            if usage is not None:
                self._take_usage(usage)
            return []
        if kind == "message_stop":
            events: list[StreamEvent] = []
            usage = self.usage()
            if usage is not None:
                events.append(usage)
            if self.stop_reason is not None:
                reason = _FINISH.get(self.stop_reason, FinishReason.STOP)
                detail = self.stop_reason
                if self.stop_reason == "model_context_window_exceeded":
                    detail = "model_context_window_exceeded: the conversation filled the model's context window"
                elif self.stop_detail:
                    detail = f"{self.stop_reason}: {self.stop_detail}"
                events.append(Finish(reason, detail=detail, model_version=self.model, request_id=self.message_id))
            return events
        return []  # ping and event types added later

    def _take_usage(self, usage: Any) -> None:
        # Counts are cumulative (message_delta repeats or updates message_start's): the latest reported wins.
        for attr, name in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                           ("cache_read", "cache_read_input_tokens"), ("cache_write", "cache_creation_input_tokens")):
            value = getattr(usage, name, None)
            if isinstance(value, int):
                setattr(self, attr, value)

    def usage(self) -> Usage | None:
        """The reported usage in our contract: Anthropic's input_tokens leaves out cache reads and
        writes, so they are added back to make input_tokens the whole prompt."""
        if self.input_tokens is None and self.output_tokens is None:
            return None
        total_input = None
        if self.input_tokens is not None:
            total_input = self.input_tokens + (self.cache_read or 0) + (self.cache_write or 0)
        return Usage(input_tokens=total_input, output_tokens=self.output_tokens,
                     cached_input_tokens=self.cache_read, cache_write_tokens=self.cache_write)
