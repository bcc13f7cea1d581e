"""Reading a Chat Completions stream: the SSE framing of the body and the chunks turned into Parley's events.

No SDK here: chat.providers.openai hands this module the raw response (its own SSE reader is faster than
the SDK's, see sse_data) and the decoded chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from chat.pace import PACE
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
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}


class ChunkReader:
    """Turns Chat Completions chunks into our events; holds what must wait for the end of the stream.

    Usage arrives after the finish chunk, so Finish is emitted only at the end (after [DONE]);
    a stream that ends with no finish_reason gets no Finish at all (the runner reports truncation).
    """

    def __init__(self) -> None:
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.usage: Usage | None = None
        self.refused = False
        #: The provider's id for the request: the `x-request-id` header (set by the caller), else the chunks' id.
        self.request_id: str | None = None
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self._calls_sent = False

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        """One decoded `chat.completion.chunk` (the JSON of an SSE `data:` line)."""
        events: list[StreamEvent] = []
        if chunk.get("model"):
            self.model = chunk["model"]
        if self.request_id is None and isinstance(chunk.get("id"), str) and chunk["id"]:
            self.request_id = chunk["id"]
        usage = chunk.get("usage")
        if usage:
            self.usage = _usage(usage)
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1 is never requested
            delta = choice.get("delta")
            if delta:
                events.extend(self._delta(delta))
            finish = choice.get("finish_reason")
            if finish:
                self.finish_reason = finish
                if finish != "length":  # cut-off arguments are not a call to make
                    events.extend(self._tool_call_events())
        return events

    def _delta(self, delta: dict[str, Any]) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        # OpenRouter/vLLM say `reasoning`, DeepSeek/LM Studio `reasoning_content`.
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if content:
            events.append(TextDelta(content))
        refusal = delta.get("refusal")
        if refusal:
            self.refused = True
            events.append(TextDelta(refusal))
        for tc in delta.get("tool_calls") or ():
            index = tc.get("index")
            if index is None:
                index = len(self._calls)
            slot = self._calls.setdefault(index, ["", "", ""])
            fn = tc.get("function") or {}
            name = fn.get("name") or None
            args = fn.get("arguments") or ""
            if tc.get("id"):
                slot[0] = tc["id"]
            if name and not slot[1]:
                slot[1] = name
            slot[2] += args
            events.append(ToolCallDelta(index=index, id=tc.get("id") or None, name=name, arguments=args))
        return events

    def _tool_call_events(self) -> list[StreamEvent]:
        if self._calls_sent:
            return []
        self._calls_sent = True
        return [
            ToolCallEvent(ToolCall(id=id_ or f"call_{index}", name=name, arguments=args or "{}"))
            for index, (id_, name, args) in sorted(self._calls.items())
        ]

    def end(self) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if self.usage is not None:
            events.append(self.usage)
        if self.finish_reason is None:
            return events
        if self.refused:
            reason, detail = FinishReason.REFUSAL, "refusal"
        else:
            reason, detail = _FINISH.get(self.finish_reason, FinishReason.STOP), self.finish_reason
            # Some compatible servers (Ollama) say "stop" after tool calls.
            if reason is FinishReason.STOP and self._calls:
                reason = FinishReason.TOOL_CALLS
        events.append(Finish(reason, detail=detail, model_version=self.model, request_id=self.request_id))
        return events


def _usage(u: dict[str, Any]) -> Usage:
    """Chat Completions usage in our contract: prompt_tokens already includes the cached part, and
    completion_tokens the reasoning; OpenAI reports no cache writes (they are not billed apart)."""
    details = u.get("completion_tokens_details")
    prompt = u.get("prompt_tokens_details")
    return Usage(
        input_tokens=_count(u.get("prompt_tokens")),
        output_tokens=_count(u.get("completion_tokens")),
        reasoning_tokens=_count(details.get("reasoning_tokens")) if isinstance(details, dict) else None,
        cached_input_tokens=_count(prompt.get("cached_tokens")) if isinstance(prompt, dict) else None,
    )


def _count(value: Any) -> int | None:
    """A token count from a compatible server's JSON, or None when it is missing or not a count."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


#: How long to read the rest of a body after `[DONE]` so that the connection goes back to the pool.
_DRAIN_SECONDS = 1.0
#: A read this large means the body arrives faster than it is read: stop resting between reads (chat.pace).
_FAST_READ = 32 * 1024
#: Rests shorter than this are not worth a timer.
_MIN_REST = 0.005


class Body(Protocol):
    """A response body read straight from the HTTP client underneath the SDK (chat.providers.openai)."""

    async def read(self) -> bytes:
        """What has arrived (waiting for some); b"" at the end."""

    async def rest(self, until: float) -> None:
        """Wait until loop time `until`, or less if the body ends first."""


class _Framing:
    """The SSE framing: bytes in, each event's `data` out; `done` once `[DONE]` came."""

    __slots__ = ("buf", "data", "done")

    def __init__(self) -> None:
        self.buf = b""
        self.data: list[bytes] = []
        self.done = False

    def feed(self, piece: bytes) -> list[bytes]:
        self.buf += piece
        if b"\n" not in piece:
            return []
        *lines, self.buf = self.buf.split(b"\n")
        out: list[bytes] = []
        data = self.data
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:  # the end of an event
                if data:
                    joined = b"\n".join(data)
                    data = self.data = []
                    if joined.startswith(b"[DONE]"):
                        self.done = True
                        return out
                    out.append(joined)
                continue
            field, _, value = line.partition(b":")
            if field == b"data":
                data.append(value[1:] if value.startswith(b" ") else value)
        return out

    def end(self) -> bytes | None:
        """The last event of a body that ended without its blank line (or a last line without its newline)."""
        if self.done:
            return None
        last = self.buf.rstrip(b"\r")
        if last:
            field, _, value = last.partition(b":")
            if field == b"data":
                self.data.append(value[1:] if value.startswith(b" ") else value)
        if self.data and not self.data[0].startswith(b"[DONE]"):
            return b"\n".join(self.data)
        return None


async def sse_data(response: Any, body: Body | None = None) -> AsyncIterator[bytes]:
    """The `data` of each server-sent event in an httpx response body, up to `[DONE]` (not included).

    Comments (`: keep-alive`, OpenRouter's `: OPENROUTER PROCESSING`) and other fields are skipped;
    several `data:` lines of one event are joined with newlines, as the SSE spec says. After
    `[DONE]` the rest of the body is read (briefly) so an HTTP/1.1 connection can be reused.

    `body`, when the caller can read the response's body directly, is read instead of the httpx
    response's iterators; between reads of a slow stream it rests until the reader's next update (chat.pace).
    """
    framing = _Framing()
    if body is None:
        pieces = response.aiter_bytes()
        async for piece in pieces:
            for data in framing.feed(piece):
                yield data
            if framing.done:
                await _drain(pieces.__anext__)
                return
    else:
        pace = PACE.get()
        loop = asyncio.get_running_loop()
        while piece := await body.read():
            for data in framing.feed(piece):
                yield data
            if framing.done:
                await _drain(body.read)
                return
            if pace is not None:
                if len(piece) >= _FAST_READ:
                    pace = None  # a fast stream: every read already brings many events
                elif pace.due - loop.time() > _MIN_REST:
                    await body.rest(pace.due)
    last = framing.end()
    if last is not None:
        yield last


async def _drain(read: Callable[[], Awaitable[bytes]]) -> None:
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            while await read():
                pass
    except Exception:  # noqa: BLE001 - the reply is complete; a failing tail only costs the connection
        pass
