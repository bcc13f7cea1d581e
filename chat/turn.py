"""Run one reply: retries before the first token, timeouts, truncation check, metrics, coalescing.

Every consumer (the chat UI, compare mode, batch runs, the command line) streams through `Turn`.
A turn never raises a `ChatError`: failures end the turn with `result.error` set and a final
`Finish` event, so the partial text is always kept. Cancellation (`asyncio.CancelledError`)
propagates after the result is marked cancelled, and closes the provider's HTTP stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TypeVar

from chat.context import trim_messages
from chat.errors import ChatError, FirstTokenTimeout, IdleTimeout, SafetyBlocked, StreamError
from chat.pace import PACE, Pace
from chat.providers.base import Provider
from chat.tokens import TokenCounter
from chat.types import (
    Finish,
    FinishReason,
    Message,
    ModelInfo,
    Params,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallEvent,
    ToolSpec,
    Usage,
    estimate_tokens,
    tokens_per_second,
)

log = logging.getLogger("parley.turn")


@dataclass(slots=True)
class TurnPolicy:
    """Retry, timeout and coalescing settings, shared by every provider."""

    max_attempts: int = 4  # the first try included
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    retry_after_cap: float = 20.0  # a longer Retry-After is reported, not waited for
    # The user's whole wait for the first token, over every attempt and backoff: retries happen
    # only within what is left of it, so a silent provider costs one timeout, not one per attempt.
    first_token_timeout: float = 60.0
    idle_timeout: float = 60.0
    coalesce_interval: float = 0.05

    def backoff(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before try `attempt + 1`, or None when the wait is too long to be worth it."""
        if retry_after is not None and retry_after > 0:
            return retry_after if retry_after <= self.retry_after_cap else None
        delay = min(self.backoff_base * 2.0 ** (attempt - 1), self.backoff_max)
        return delay * random.uniform(0.75, 1.0)  # jitter spreads out clients that failed together


@dataclass(slots=True)
class TurnResult:
    """Everything known about a reply so far; updated in place while it streams."""

    provider: str
    model: str
    # The answer arrives in thousands of small pieces: they are joined when read, not per token.
    _chunks: list[str] = field(default_factory=list)
    _joined: str = ""
    _joined_count: int = 0
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    # Usage as the provider reported it (chat.types.Usage says what each figure counts); None until it does.
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    finish_reason: FinishReason | None = None
    finish_detail: str | None = None
    model_version: str | None = None
    #: The provider's id for the request that answered (chat.types.Finish.request_id).
    request_id: str | None = None
    error: ChatError | None = None
    attempts: int = 0
    dropped_messages: int = 0
    ttft_ms: float | None = None
    duration_ms: float | None = None
    # perf_counter stamps, for tokens per second
    started: float = 0.0
    first_text_at: float | None = None
    ended: float | None = None
    text_chunks: int = 0

    @property
    def text(self) -> str:
        """The answer so far."""
        if self._joined_count != len(self._chunks):
            self._joined = "".join(self._chunks)
            self._joined_count = len(self._chunks)
        return self._joined

    def add_text(self, piece: str) -> None:
        self._chunks.append(piece)

    def replace_text(self, text: str) -> None:
        """Replace the answer so far (output moderation withholds a flagged reply: core.moderation)."""
        self._chunks = [text] if text else []
        self._joined, self._joined_count = text, len(self._chunks)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def estimated(self) -> bool:
        """True while the output figure is Parley's estimate: the provider has not reported usage
        (still streaming, stopped, failed, or a server that never reports it)."""
        return self.output_tokens is None

    @property
    def usage(self) -> Usage:
        """Usage in the one contract: the provider's figures, or an estimate of the output marked as one."""
        if not self.estimated:
            return Usage(self.input_tokens, self.output_tokens, self.reasoning_tokens,
                         self.cached_input_tokens, self.cache_write_tokens, estimated=False)
        # Reasoning is output too (billed, and counted by the provider's figure when it comes).
        guess = estimate_tokens(self.text, self.text_chunks) + estimate_tokens(self.reasoning)
        return Usage(self.input_tokens, guess if (self.text or self.reasoning) else None, None,
                     self.cached_input_tokens, self.cache_write_tokens, estimated=True)

    @property
    def tokens_per_second(self) -> float | None:
        """Output tokens per second by chat.types.tokens_per_second; live while streaming (estimated tokens, time so far)."""
        duration = self.duration_ms
        if duration is None and self.started:
            duration = (time.perf_counter() - self.started) * 1000
        return tokens_per_second(self.usage.output_tokens, self.ttft_ms, duration)

    @property
    def ref(self) -> str:
        return f"{self.provider}:{self.model}"


SleepFn = Callable[[float], Awaitable[None]]
T = TypeVar("T")


async def coalesce(task: asyncio.Task[object], changed: asyncio.Event, value: T,
                   interval: float | Callable[[], float], pace: Pace | None = None) -> AsyncGenerator[T, None]:
    """Yield `value` (updated in place by `task`) after each change: at once the first time, then at
    most once per `interval`, and always once more when `task` ends. Closing the iterator early
    cancels `task`; an unexpected error in `task` is raised here. `interval` may be a function,
    read before every wait, so that a server under load can space updates out. `pace`, when given, is
    told when the next update is due, so that the task's stream can leave tokens unread until then.
    """
    pace_of = interval if callable(interval) else (lambda: interval)
    task.add_done_callback(lambda _t: changed.set())
    loop = asyncio.get_running_loop()
    last = float("-inf")
    try:
        while not task.done():
            await changed.wait()
            wait = last + pace_of() - loop.time()
            if wait > 0 and not task.done():
                await _rest(loop, task, wait)  # let more tokens gather; wake early only when the task ends
            changed.clear()
            if task.done():
                break
            last = loop.time()
            if pace is not None:
                pace.due = last + pace_of()
            yield value
        task.result()
        yield value
    finally:
        if not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


async def _rest(loop: asyncio.AbstractEventLoop, task: asyncio.Task[object], seconds: float) -> None:
    """Wait `seconds`, or less if `task` ends first; `task` itself is never cancelled from here.

    What `wait_for(shield(task), seconds)` did, without its cost per streamed update: a shield future, and on
    every timeout (the usual way out) a cancellation of it and one more trip round the loop to see it land.
    """
    waiter = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(seconds, wake)
    task.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)


class Turn:
    """One reply from one model. Iterate `events()` for every event or `updates()` for a coalesced UI feed."""

    def __init__(
        self,
        provider: Provider,
        model: ModelInfo,
        messages: Sequence[Message],
        params: Params,
        *,
        tools: Sequence[ToolSpec] = (),
        policy: TurnPolicy | None = None,
        sleep: SleepFn = asyncio.sleep,
        count: Callable[[str], int] | None = None,
    ):
        self.provider = provider
        self.model = model
        self.params = params
        self.tools = tools
        self.policy = policy or TurnPolicy()
        self._sleep = sleep
        # The model's own token count where one exists offline (chat.tokens); `count` may be calibrated.
        self.count = count or TokenCounter(model.provider, model.id)
        self.messages, dropped = trim_messages(
            messages, model.context_window, params.max_tokens, provider=model.provider, count=self.count
        )
        self.result = TurnResult(provider=model.provider, model=model.id, dropped_messages=dropped)

    # -- the raw event stream ------------------------------------------------------------

    async def events(self) -> AsyncGenerator[StreamEvent, None]:
        """Every event of the reply; the last one is always a `Finish` unless cancelled."""
        r = self.result
        r.started = time.perf_counter()
        policy = self.policy
        loop = asyncio.get_running_loop()
        first_token_deadline = loop.time() + policy.first_token_timeout
        try:
            while True:
                r.attempts += 1
                started_output = False
                try:
                    async for event in self._attempt(first_token_deadline):
                        if not started_output and isinstance(event, (TextDelta, ReasoningDelta, ToolCallDelta, ToolCallEvent)):
                            started_output = True
                        yield event
                    break
                except ChatError as e:
                    wait = None
                    if e.retryable and not started_output and r.attempts < policy.max_attempts:
                        wait = policy.backoff(r.attempts, e.retry_after)
                        if wait is not None and loop.time() + wait >= first_token_deadline:
                            wait = None  # no time left for another try: report this failure now
                    if wait is None:
                        self._fail(e)
                        break
                    log.info("retrying %s after %s (%.2fs, attempt %d)", r.ref, e.kind, wait, r.attempts)
                    await self._sleep(wait)
                except Exception as e:  # a provider bug must not lose the partial text
                    log.exception("unexpected failure in %s", r.ref)
                    self._fail(StreamError(f"{self.provider.label or r.provider} failed unexpectedly ({type(e).__name__}). "
                                           "The text so far is kept; press Retry to try again.", provider=r.provider))
                    break
            if r.finish_reason is None:
                # The provider ended the stream cleanly but without its finish marker.
                r.finish_reason = FinishReason.TRUNCATED
                r.error = StreamError(
                    f"The reply from {self.provider.label or r.provider} was cut off (the stream ended without "
                    "finishing). The text so far is kept; press Retry to try again.",
                    provider=r.provider,
                )
        except (asyncio.CancelledError, GeneratorExit):
            r.finish_reason = FinishReason.CANCELLED
            raise
        finally:
            r.ended = time.perf_counter()
            r.duration_ms = (r.ended - r.started) * 1000
        yield Finish(r.finish_reason, r.finish_detail, r.model_version)

    def _fail(self, error: ChatError) -> None:
        self.result.error = error
        # A prompt the provider blocked for its content is a refusal, not a failure of the model:
        # it ends as content_filter (with its message), as a reply the provider filtered does.
        self.result.finish_reason = FinishReason.CONTENT_FILTER if isinstance(error, SafetyBlocked) else FinishReason.ERROR
        self.result.finish_detail = error.kind

    async def _attempt(self, first_token_deadline: float) -> AsyncGenerator[StreamEvent, None]:
        """One try: the provider's stream under the turn's first-token deadline (loop time), then an idle deadline."""
        r = self.result
        policy = self.policy
        loop = asyncio.get_running_loop()
        first = True
        # Moving the idle deadline costs a timer per token: move it at most this often instead
        # (the timeout may then fire up to this much early, a small share of it).
        resched_every = min(0.5, policy.idle_timeout / 4)
        resched_at = 0.0
        stream = self.provider.stream(self.model.id, self.messages, self.params, tools=self.tools)
        try:
            async with asyncio.timeout_at(first_token_deadline) as deadline, aclosing(stream):
                async for event in stream:
                    if isinstance(event, Finish):
                        # Held back: the turn emits the final Finish itself, after its metrics are set.
                        r.finish_reason = event.reason
                        r.finish_detail = event.detail
                        r.model_version = event.model_version or r.model_version
                        r.request_id = event.request_id or r.request_id
                        continue
                    if first:
                        first = False
                        if r.ttft_ms is None:
                            r.ttft_ms = (time.perf_counter() - r.started) * 1000
                    now = loop.time()
                    if now >= resched_at:
                        deadline.reschedule(now + policy.idle_timeout)
                        resched_at = now + resched_every
                    self._apply(event)
                    yield event
        except TimeoutError as e:
            label = self.provider.label or r.provider  # "OpenAI", or the endpoint's own label
            if first:
                # The real wait since the turn began (earlier attempts and backoffs included).
                raise FirstTokenTimeout(time.perf_counter() - r.started, provider=label) from e
            raise IdleTimeout(policy.idle_timeout, provider=label) from e

    def _apply(self, event: StreamEvent) -> None:
        r = self.result
        if isinstance(event, TextDelta):
            if r.first_text_at is None:
                r.first_text_at = time.perf_counter()
            r.add_text(event.text)
            r.text_chunks += 1
        elif isinstance(event, ReasoningDelta):
            r.reasoning += event.text
        elif isinstance(event, Usage):
            r.input_tokens = event.input_tokens if event.input_tokens is not None else r.input_tokens
            r.output_tokens = event.output_tokens if event.output_tokens is not None else r.output_tokens
            r.reasoning_tokens = event.reasoning_tokens if event.reasoning_tokens is not None else r.reasoning_tokens
            if event.cached_input_tokens is not None:
                r.cached_input_tokens = event.cached_input_tokens
            if event.cache_write_tokens is not None:
                r.cache_write_tokens = event.cache_write_tokens
        elif isinstance(event, ToolCallEvent):
            r.tool_calls.append(event.call)

    # -- the coalesced feed for a UI -------------------------------------------------------

    async def updates(self, interval: float | Callable[[], float] | None = None) -> AsyncGenerator[TurnResult, None]:
        """The result after changes: the first token at once, then at most one update per `interval`.

        Each update carries the whole text so far (the same `TurnResult` object, updated in place),
        so a 2,000 token/s stream becomes about 20 UI updates per second, not 2,000. The last
        update is always sent, after the turn has finished.
        """
        interval = self.policy.coalesce_interval if interval is None else interval
        changed = asyncio.Event()
        r = self.result

        async def pump() -> None:
            async with aclosing(self.events()) as events:
                async for _ in events:
                    changed.set()

        # The pump's stream reads at this pace (chat.pace); the task takes a copy of the context as it is now.
        pace = Pace()
        token = PACE.set(pace)
        try:
            task = asyncio.create_task(pump())
        finally:
            PACE.reset(token)
        try:
            async with aclosing(coalesce(task, changed, r, interval, pace)) as updates:
                async for value in updates:
                    yield value
        finally:
            if not r.done:
                r.finish_reason = FinishReason.CANCELLED

    async def run(self) -> TurnResult:
        """Run to the end and return the result (for batch runs and tests)."""
        async with aclosing(self.events()) as events:
            async for _ in events:
                pass
        return self.result
