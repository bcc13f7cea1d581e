"""Reading a Gemini stream: google-genai's response chunks turned into Parley's events.

The chunks arrive as the SDK's objects, but only their attributes are read here, so this module needs
no SDK import; chat.providers.gemini makes the calls and feeds the chunks in.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from chat.errors import SafetyBlocked
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

_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "MODEL_ARMOR", "LANGUAGE"}
_FINISH = {"STOP": FinishReason.STOP, "MAX_TOKENS": FinishReason.LENGTH}


class SignedCall(ToolCall):
    """A function call with the thought signature Gemini attached to it (base64), sent back with the call.

    Gemini 3 refuses the next step of a tool loop (400) unless every function call of the current turn
    comes back with its signature, so the signature rides on the call through the loop's history.
    """

    signature: str | None = None


def _name(value: Any) -> str | None:
    """The wire name of a genai enum (or a plain string the SDK did not know)."""
    if value is None:
        return None
    return getattr(value, "value", None) or str(value)


class ChunkReader:
    """Turns GenerateContentResponse chunks into our events.

    finishReason may appear on several chunks (recorded streams repeat STOP before an error), so the
    last one is kept and Finish is emitted only when the stream ends; no finishReason, no Finish.
    A blocked prompt (no candidates, promptFeedback.blockReason) raises SafetyBlocked: a clear
    message beats an empty reply marked content_filter.
    """

    def __init__(self, label: str = "Google Gemini") -> None:
        self.label = label
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.usage: Usage | None = None
        self.calls = 0
        self.response_id: str | None = None  # Gemini's id for the response (responseId), for the reproducibility card

    def feed(self, chunk: Any) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if getattr(chunk, "model_version", None):
            self.model = chunk.model_version
        if self.response_id is None and getattr(chunk, "response_id", None):
            self.response_id = chunk.response_id
        meta = getattr(chunk, "usage_metadata", None)
        if meta is not None:
            self.usage = gemini_usage(meta)
        candidates = chunk.candidates or []
        feedback = getattr(chunk, "prompt_feedback", None)
        block = _name(getattr(feedback, "block_reason", None)) if feedback is not None else None
        if not candidates and block:
            raise SafetyBlocked(
                f"{self.label} blocked the prompt before answering ({block}). Rephrase the message and try again.",
                provider=self.label,
            )
        if not candidates:
            return events
        candidate = candidates[0]
        content = candidate.content
        for part in (content.parts if content is not None and content.parts else []):
            if part.function_call is not None:
                fc = part.function_call
                index = self.calls
                self.calls += 1
                signature = getattr(part, "thought_signature", None)
                fields = {"id": fc.id or f"call_{index}", "name": fc.name or "", "arguments": json.dumps(fc.args or {})}
                call = (
                    SignedCall(**fields, signature=base64.b64encode(signature).decode("ascii"))
                    if signature
                    else ToolCall(**fields)
                )
                events.append(ToolCallDelta(index=index, id=call.id, name=call.name, arguments=call.arguments))
                events.append(ToolCallEvent(call))
            elif part.text:
                events.append(ReasoningDelta(part.text) if part.thought else TextDelta(part.text))
        reason = _name(candidate.finish_reason)
        if reason and reason != "FINISH_REASON_UNSPECIFIED":
            self.finish_reason = reason
        return events

    def end(self) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if self.usage is not None:
            events.append(self.usage)
        reason = self.finish_reason
        if reason is None or reason == "CONTINUATION":
            return events
        if reason in _FILTERED:
            mapped = FinishReason.CONTENT_FILTER
        else:
            mapped = _FINISH.get(reason, FinishReason.STOP)
            if mapped is FinishReason.STOP and self.calls:
                mapped = FinishReason.TOOL_CALLS  # Gemini says STOP after function calls
        events.append(Finish(mapped, detail=reason, model_version=self.model, request_id=self.response_id))
        return events


def gemini_usage(meta: Any) -> Usage:
    """Gemini usage metadata in our contract.

    candidatesTokenCount leaves out thinking, which is billed as output: output is candidates plus
    thoughts. promptTokenCount already includes cachedContentTokenCount; a tool-use prompt
    (toolUsePromptTokenCount) is billed as input, so it is added. Gemini reports no cache writes.
    """
    candidates = getattr(meta, "candidates_token_count", None)
    thoughts = getattr(meta, "thoughts_token_count", None)
    prompt = getattr(meta, "prompt_token_count", None)
    tool_prompt = getattr(meta, "tool_use_prompt_token_count", None)
    output = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    return Usage(
        input_tokens=None if prompt is None else prompt + (tool_prompt or 0),
        output_tokens=output,
        reasoning_tokens=thoughts,
        cached_input_tokens=getattr(meta, "cached_content_token_count", None),
    )
