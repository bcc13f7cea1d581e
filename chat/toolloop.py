"""Run a reply that may call tools: the model asks, the tools run, their results go back, the model goes on.

Each step is a `Turn` (retries, timeouts and metrics apply per step). Tool calls of one step run
concurrently; every failure (unknown tool, bad arguments, timeout, a tool's own error) goes back to the
model as the tool's result, so it can correct itself, and the loop never raises a `ChatError`. A step
limit stops runaway loops. Cancellation cancels running tools, marks them and the result cancelled,
and propagates, like `Turn`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Literal

from chat import tracing
from chat.errors import ChatError
from chat.providers.base import Provider
from chat.tools.base import Tool, Toolbox, ToolContext, ToolError
from chat.turn import SleepFn, Turn, TurnPolicy, TurnResult, coalesce
from chat.types import FinishReason, Message, ModelInfo, Params, ToolCall, ToolCallDelta, ToolCallEvent, Usage

log = logging.getLogger("parley.toolloop")

DEFAULT_MAX_STEPS = 5
MAX_STEPS_LIMIT = 50

ToolStatus = Literal["pending", "done", "cancelled"]


@dataclass(slots=True, eq=False)
class ToolRecord:
    """One tool call as the UI shows it: arguments as they stream, then the result or the error.

    status: "pending" while the arguments stream or the tool runs (`running` tells which), "done" once
    it has a result or an error, "cancelled" when it was stopped or never run (see `error`).
    """

    step: int
    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""
    result: str | None = None
    error: str | None = None
    duration_ms: float | None = None
    status: ToolStatus = "pending"
    started: float | None = None  # perf_counter when the tool started running

    @property
    def key(self) -> str:
        """Unique within a reply ("step:index"); ids alone may repeat across steps (Gemini numbers its calls)."""
        return f"{self.step}:{self.index}"

    @property
    def running(self) -> bool:
        return self.status == "pending" and self.started is not None

    @property
    def content(self) -> str:
        """What the model reads back: the result, or the error prefixed so it cannot pass for a result."""
        if self.error is not None:
            return f"Error: {self.error}"
        return self.result or "(no output)"  # an empty result would read like a lost one

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
            "result": self.result,
            "error": self.error,
            "duration_ms": self.duration_ms,
            "status": self.status,
            "step": self.step,
        }


@dataclass(slots=True)
class ToolLoopResult:
    """Everything known about a tools-enabled reply; updated in place while it runs (like `TurnResult`)."""

    provider: str
    model: str
    steps: list[TurnResult] = field(default_factory=list)
    tools: list[ToolRecord] = field(default_factory=list)
    #: The messages this reply adds to the conversation: assistant messages that asked for tools, the
    #: tool results, and the final assistant message. `history + messages` continues the conversation.
    messages: list[Message] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    finish_detail: str | None = None
    error: ChatError | None = None
    step_limit_reached: bool = False
    note: str | None = None  # shown after the text (the step limit)
    started: float = 0.0
    ended: float | None = None
    duration_ms: float | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def turn(self) -> TurnResult | None:
        """The current (or last) step."""
        return self.steps[-1] if self.steps else None

    @property
    def text(self) -> str:
        """The text of every step so far, then the note."""
        parts = [s.text.strip() for s in self.steps if s.text.strip()]
        if self.note:
            parts.append(self.note)
        return "\n\n".join(parts)

    @property
    def reasoning(self) -> str:
        return "\n\n".join(s.reasoning.strip() for s in self.steps if s.reasoning.strip())

    @property
    def input_tokens(self) -> int | None:
        return _sum(s.input_tokens for s in self.steps)

    @property
    def output_tokens(self) -> int | None:
        return _sum(s.output_tokens for s in self.steps)

    @property
    def reasoning_tokens(self) -> int | None:
        return _sum(s.reasoning_tokens for s in self.steps)

    @property
    def usage(self) -> Usage:
        """Every step's usage together (each step is billed as its own call); estimated if any step's is."""
        return Usage.combine(s.usage for s in self.steps)

    @property
    def ttft_ms(self) -> float | None:
        """Time to the first token of the first step (what the user waited for)."""
        return self.steps[0].ttft_ms if self.steps else None

    @property
    def model_version(self) -> str | None:
        return next((s.model_version for s in reversed(self.steps) if s.model_version), None)

    @property
    def ref(self) -> str:
        return f"{self.provider}:{self.model}"


def _sum(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


class ToolLoop:
    """A reply with tools. Iterate `updates()` for a coalesced UI feed, or await `run()`."""

    def __init__(
        self,
        provider: Provider,
        model: ModelInfo,
        messages: Sequence[Message],
        params: Params,
        *,
        tools: Toolbox | Iterable[Tool] = (),
        context: ToolContext | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        tool_timeout: float | None = None,
        policy: TurnPolicy | None = None,
        sleep: SleepFn = asyncio.sleep,
        count: Callable[[str], int] | None = None,
    ):
        """`tool_timeout` overrides every tool's own timeout. A model without tool support gets none.
        `count` counts tokens for each step's budget (chat.turn.Turn's)."""
        if not 1 <= max_steps <= MAX_STEPS_LIMIT:
            raise ValueError(f"max_steps must be between 1 and {MAX_STEPS_LIMIT}")
        self.provider = provider
        self.model = model
        self.history = list(messages)
        self.params = params
        self.context = context or ToolContext()
        self.max_steps = max_steps
        self.tool_timeout = tool_timeout
        self.policy = policy or TurnPolicy()
        self._sleep = sleep
        self.count = count
        box = tools if isinstance(tools, Toolbox) else Toolbox(tools)
        offered = box.available(self.context) if model.supports_tools else []
        self.tools: dict[str, Tool] = {t.name: t for t in offered}
        self._specs = [t.spec() for t in offered]
        self.result = ToolLoopResult(provider=model.provider, model=model.id)
        self._changed: Callable[[], None] = _nothing
        self._used = False
        #: This reply's span (chat.tracing.start sets it): the parent of its tool calls' spans.
        self.trace: tracing.Traced | None = None

    # -- the loop ---------------------------------------------------------------------------

    async def _drive(self) -> None:
        if self._used:
            raise RuntimeError("a ToolLoop runs once: build a new one for another reply")
        self._used = True
        r = self.result
        r.started = time.perf_counter()
        history = list(self.history)
        try:
            for step in range(1, self.max_steps + 1):
                turn = Turn(self.provider, self.model, history, self.params, tools=self._specs,
                            policy=self.policy, sleep=self._sleep, count=self.count)
                r.steps.append(turn.result)
                streaming: dict[int, ToolRecord] = {}  # this step's records by stream index
                called: list[ToolRecord] = []  # records of complete calls, in the order of turn.result.tool_calls
                async with aclosing(turn.events()) as events:
                    async for event in events:
                        if isinstance(event, ToolCallDelta):
                            self._on_delta(step, streaming, event)
                        elif isinstance(event, ToolCallEvent):
                            called.append(self._on_call(step, streaming, called, event.call))
                        self._changed()
                t = turn.result
                for rec in streaming.values():
                    if rec not in called:  # arguments began streaming but the call never completed
                        self._stop(rec, "The reply ended before this call was complete; it was not run.")
                if t.error is not None or t.finish_reason is not FinishReason.TOOL_CALLS or not t.tool_calls:
                    why = f"Not run: the reply ended ({(t.finish_reason or FinishReason.STOP).value})."
                    for rec in called:
                        self._stop(rec, why)
                    self._end(t, t.text)
                    return
                if step == self.max_steps:
                    for rec in called:
                        self._stop(rec, f"Not run: the limit of {self.max_steps} steps was reached.")
                    r.step_limit_reached = True
                    r.note = (f"_(Stopped after {self.max_steps} steps: the model kept asking for tools. "
                              "Send another message to let it go on.)_")
                    self._end(t, "\n\n".join(x for x in (t.text.strip(), r.note) if x), detail="step_limit")
                    return
                asked = Message(role="assistant", content=t.text, reasoning=t.reasoning or None,
                                tool_calls=tuple(t.tool_calls))
                history.append(asked)
                r.messages.append(asked)
                await asyncio.gather(*(self._run(rec, call) for rec, call in zip(called, t.tool_calls)))
                for rec in called:
                    answer = Message(role="tool", tool_call_id=rec.id, name=rec.name, content=rec.content,
                                     is_error=rec.error is not None)
                    history.append(answer)
                    r.messages.append(answer)
                self._changed()
        except asyncio.CancelledError:
            r.finish_reason = FinishReason.CANCELLED
            r.finish_detail = "cancelled"
            for rec in r.tools:
                if rec.status == "pending":
                    self._stop(rec, "Stopped before it finished.")
            raise
        finally:
            r.ended = time.perf_counter()
            r.duration_ms = (r.ended - r.started) * 1000
            self._changed()

    def _end(self, t: TurnResult, text: str, *, detail: str | None = None) -> None:
        r = self.result
        r.error = t.error
        r.finish_reason = t.finish_reason
        r.finish_detail = detail or t.finish_detail
        if text.strip() or t.reasoning:
            r.messages.append(Message(role="assistant", content=text, reasoning=t.reasoning or None))

    def _on_delta(self, step: int, streaming: dict[int, ToolRecord], d: ToolCallDelta) -> None:
        rec = streaming.get(d.index)
        if rec is None:
            rec = streaming[d.index] = ToolRecord(step=step, index=d.index)
            self.result.tools.append(rec)
        if d.id:
            rec.id = d.id
        if d.name:
            rec.name = d.name
        rec.arguments += d.arguments

    def _on_call(
        self, step: int, streaming: dict[int, ToolRecord], called: list[ToolRecord], call: ToolCall
    ) -> ToolRecord:
        """The record of a complete call: the streamed one with its id, else the first unclaimed one, else new."""
        free = [rec for _, rec in sorted(streaming.items()) if rec not in called]
        rec = next((x for x in free if x.id and x.id == call.id), None) or next((x for x in free if not x.id), None)
        if rec is None:
            index = max(streaming, default=-1) + 1
            rec = streaming[index] = ToolRecord(step=step, index=index)
            self.result.tools.append(rec)
        rec.id, rec.name, rec.arguments = call.id, call.name, call.arguments
        return rec

    async def _run(self, rec: ToolRecord, call: ToolCall) -> None:
        span = tracing.start_tool(self.trace, call.name, call.id, call.arguments)
        rec.started = time.perf_counter()
        self._changed()
        try:
            tool = self.tools.get(call.name)
            if tool is None:
                known = ", ".join(self.tools) or "none"
                raise ToolError(f"There is no tool named {call.name!r}. Available tools: {known}.")
            rec.result = await tool.run(call.arguments, self.context, timeout=self.tool_timeout)
            rec.status = "done"
        except ToolError as e:
            rec.error = e.message
            rec.status = "done"
        except asyncio.CancelledError:
            rec.status = "cancelled"
            rec.error = "Stopped before it finished."
            raise
        finally:
            rec.duration_ms = (time.perf_counter() - rec.started) * 1000
            log.info("tool %s (%s) %s in %.0f ms", call.name, rec.key, "failed" if rec.error else rec.status,
                     rec.duration_ms)
            tracing.end_tool(span, result=rec.result, error=rec.error, status=rec.status)
            self._changed()

    @staticmethod
    def _stop(rec: ToolRecord, why: str) -> None:
        rec.status = "cancelled"
        rec.error = rec.error or why

    # -- consumers ----------------------------------------------------------------------------

    async def updates(self, interval: float | Callable[[], float] | None = None) -> AsyncGenerator[ToolLoopResult, None]:
        """The result after changes: the first change at once, then at most one update per `interval`.

        The same `ToolLoopResult` object each time (text so far, tool records, `turn` = current step);
        the last update is always sent after the loop ends. Closing the iterator cancels the loop.
        """
        interval = self.policy.coalesce_interval if interval is None else interval
        changed = asyncio.Event()
        self._changed = changed.set
        r = self.result
        try:
            async with aclosing(coalesce(asyncio.create_task(self._drive()), changed, r, interval)) as updates:
                async for value in updates:
                    yield value
        finally:
            self._changed = _nothing
            if not r.done:
                r.finish_reason = FinishReason.CANCELLED

    async def run(self, on_change: Callable[[], None] | None = None) -> ToolLoopResult:
        """Run to the end and return the result (for batch runs and tests).

        `on_change` is called after every change, uncoalesced: for a caller that merges several
        loops into one feed of its own (compare panes), where a second coalescing layer per loop
        would only add latency.
        """
        if on_change is not None:
            self._changed = on_change
        try:
            await self._drive()
        finally:
            self._changed = _nothing
        return self.result


def _nothing() -> None:
    return None


__all__ = ["DEFAULT_MAX_STEPS", "ToolLoop", "ToolLoopResult", "ToolRecord", "ToolStatus"]
