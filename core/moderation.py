"""Moderation of what goes in and what comes out (MODERATION=openai: OpenAI's moderation endpoint).

A user's message is checked before anything is sent (core.chat refuses it, stored flagged; a compare
prompt and a batch's prompts are refused whole, nothing stored or sent: core.compare, core.batch). A reply is
checked while it streams, every MODERATION_EVERY_CHARS characters, and once more when it ends. The
in-stream checks run as tasks beside the stream: tokens never wait for them; their verdict is acted on
when it comes. A flagged reply is stopped and withheld: its text is replaced by a notice (what the
browser had already been shown of it is replaced on the next update; the final update of a chat reply
waits for the end-of-reply check, so the last words never reach the browser before it), and it is
stored with the notice as its text, finish_reason content_filter and the error "flagged by moderation:
<categories>" (core.store.FLAGGED_ERROR), which the dashboard counts as refused, apart from errors.

The moderation endpoint being down (or slower than MODERATION_TIMEOUT at the end of a reply) never
blocks a chat: the text passes and a warning is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from chat.errors import ChatError, SafetyBlocked
from chat.toolloop import ToolLoopResult
from chat.turn import TurnResult
from chat.types import FinishReason
from core.env_numbers import number_at_least
from core.store import FLAGGED_ERROR

if TYPE_CHECKING:
    from chat.registry import Registry

log = logging.getLogger("parley.moderation")

#: The notice that replaces a flagged reply (in the chat, the API, compare panes and the store).
WITHHELD = ("This reply was withheld: the moderation check flagged it ({categories}). What was shown of it "
            "while it streamed has been removed. Rephrase your message, or ask something else.")


@dataclass(frozen=True, slots=True)
class ModerationSettings:
    """MODERATION_EVERY_CHARS, MODERATION_TIMEOUT (MODERATION itself: core.config.AppConfig.moderation)."""

    #: Check a streaming reply each time it has grown by this many characters; 0: only when it ends.
    every_chars: int = 2000
    #: Seconds the end-of-reply check may hold the reply's final update; longer, and the reply passes.
    timeout: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ModerationSettings:
        return cls(every_chars=int(number_at_least(env, "MODERATION_EVERY_CHARS", 2000, 0)),
                   timeout=number_at_least(env, "MODERATION_TIMEOUT", 10.0, 0.1))


class _Checker(Protocol):
    async def moderate(self, text: str) -> list[str]: ...


class Moderator:
    """The deployment's moderation check: `check` says what a text is flagged for."""

    def __init__(self, registry: Registry, mode: str | None, settings: ModerationSettings | None = None):
        self.registry = registry
        self.mode = mode
        self.settings = settings or ModerationSettings()

    @classmethod
    def of(cls, services: Any) -> Moderator:
        """The moderator of an app's services (core.services.Services)."""
        return cls(services.registry, services.config.moderation, services.config.moderation_checks)

    @property
    def on(self) -> bool:
        return self.mode == "openai"

    def _checker(self) -> _Checker | None:
        checker = self.registry.providers.get("openai")
        if checker is None or not hasattr(checker, "moderate"):
            log.warning("MODERATION=openai but OpenAI is not configured: nothing is checked")
            return None
        return checker

    async def check(self, text: str, what: str = "message") -> tuple[str, ...] | None:
        """The categories `text` is flagged for, or None when it passes (or the check cannot be made)."""
        if not self.on or not text.strip():
            return None
        checker = self._checker()
        if checker is None:
            return None
        try:
            flagged = await checker.moderate(text)
        except ChatError as e:
            # Fail open, loudly: an outage of the moderation endpoint must not stop every chat.
            log.warning("moderation check of a %s failed (%s); it was let through", what, e.kind)
            return None
        return tuple(sorted(set(flagged))) or None

    async def flagged_prompts(self, prompts: Sequence[tuple[str, str]], at_once: int = 8) -> list[tuple[str, tuple[str, ...]]]:
        """(id, categories) of each (id, text) that is flagged, in the given order; a few checks run at once."""
        if not self.on or not prompts:
            return []
        gate = asyncio.Semaphore(at_once)

        async def one(text: str) -> tuple[str, ...] | None:
            async with gate:
                return await self.check(text, "prompt")

        verdicts = await asyncio.gather(*(one(text) for _, text in prompts))
        return [(pid, cats) for (pid, _), cats in zip(prompts, verdicts, strict=True) if cats]

    def guard(self) -> OutputGuard | None:
        """A guard for one streaming reply, or None when moderation is off (or cannot check anything)."""
        return OutputGuard(self) if self.on and self._checker() is not None else None


Result = TurnResult | ToolLoopResult


class OutputGuard:
    """Moderation of one streaming reply: checks beside the stream, a last one at its end."""

    def __init__(self, moderator: Moderator):
        self.moderator = moderator
        self.every = moderator.settings.every_chars
        #: The categories the reply was flagged for, once it is.
        self.flagged: tuple[str, ...] | None = None
        self._passed = 0  # characters of the reply known to pass
        self._check: asyncio.Task[tuple[str, ...] | None] | None = None
        self._checking = 0  # the length of the text the running check reads
        self._on_flag: Callable[[], None] | None = None

    @property
    def notice(self) -> str:
        return WITHHELD.format(categories=", ".join(self.flagged or ()))

    def observe(self, text: str) -> None:
        """Start a check beside the stream when the reply has grown by `every` characters since the last."""
        self._take()
        if self.flagged or not self.every or len(text) - self._passed < self.every:
            return
        if self._check is not None and not self._check.done():
            return  # one at a time: the next starts when the reply has grown again after this one
        self._checking = len(text)
        self._check = asyncio.ensure_future(self.moderator.check(text, "reply"))
        if self._on_flag is not None:
            on_flag = self._on_flag
            self._check.add_done_callback(lambda t: on_flag() if not t.cancelled() and t.result() else None)

    def _take(self) -> None:
        """Read a finished check's verdict."""
        task = self._check
        if task is None or not task.done():
            return
        self._check = None
        if task.cancelled():
            return
        if (found := task.result()) is not None:
            self.flagged = found
        else:
            self._passed = max(self._passed, self._checking)

    async def watch(self, updates: AsyncGenerator[Result, None]) -> AsyncGenerator[Result, None]:
        """`updates` (a turn's coalesced feed) moderated: it ends early, the reply stopped, once a check
        flags it; the final update is held until the end-of-reply check has passed it."""
        upcoming: asyncio.Future[Result] | None = None
        try:
            while True:
                check = self._check
                if check is not None and not check.done():
                    # Race the stream and the running check: a verdict is acted on when it comes.
                    upcoming = asyncio.ensure_future(anext(updates))
                    await asyncio.wait({upcoming, check}, return_when=asyncio.FIRST_COMPLETED)
                    self._take()
                    if self.flagged:
                        return  # `finally` stops the stream
                    try:
                        r = await upcoming
                    except StopAsyncIteration:
                        return
                    finally:
                        upcoming = None
                else:
                    try:
                        r = await anext(updates)
                    except StopAsyncIteration:
                        return
                self._take()
                if self.flagged:
                    return
                if r.done:
                    await self.settle_text(r.text)
                    if self.flagged:
                        return
                else:
                    self.observe(r.text)
                yield r
        finally:
            if upcoming is not None and not upcoming.done():
                upcoming.cancel()  # stops the stream: the turn is marked cancelled, then withheld
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await upcoming
            with contextlib.suppress(RuntimeError):  # already closed by the cancellation above
                await updates.aclose()

    async def run(self, start: Callable[[], Coroutine[Any, Any, None]], result: Result) -> None:
        """Run one compare pane's reply (`start()`), stopping it when a check beside it flags it; then the
        end-of-reply check. The checks are started by `observe`, from the run's coalesced feed."""
        task = asyncio.ensure_future(start())

        def stop() -> None:
            task.cancel()

        self._on_flag = stop
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise
        finally:
            self._on_flag = None
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]  # an exception, checked above
        await self.settle(result)

    async def settle_text(self, text: str) -> None:
        """The end-of-reply check of `text` (unless a check already passed all of it), within the timeout."""
        self._take()
        if self._check is not None:
            self._check.cancel()  # superseded by the check of the whole reply
            self._check = None
        if self.flagged or len(text) <= self._passed:
            return
        try:
            found = await asyncio.wait_for(self.moderator.check(text, "reply"), self.moderator.settings.timeout)
        except TimeoutError:
            log.warning("moderation check of a reply took over %.0f s; it was let through", self.moderator.settings.timeout)
            return
        if found is not None:
            self.flagged = found
        else:
            self._passed = len(text)

    async def settle(self, result: Result) -> bool:
        """Check whatever of the reply is unchecked (it may have been stopped or failed), and withhold it
        if it is flagged. True when it was withheld."""
        await self.settle_text(result.text)
        if self.flagged:
            withhold(result, self.notice, self.flagged)
        return self.flagged is not None


def withhold(result: Result, notice: str, categories: Sequence[str]) -> None:
    """Replace a reply, in place, by `notice`: its text and reasoning go, its usage stays (it was billed)."""
    steps = result.steps if isinstance(result, ToolLoopResult) else [result]
    for i, step in enumerate(steps):
        step.replace_text(notice if i == 0 else "")
        step.reasoning = ""
    if isinstance(result, ToolLoopResult):
        result.note = None
        if not steps:
            result.note = notice
    result.finish_reason = FinishReason.CONTENT_FILTER
    result.finish_detail = "moderation"
    # Stored as a flagged message is (core.store.FLAGGED_ERROR): a reopened chat shows the notice, and
    # the turn is never sent as context again.
    result.error = SafetyBlocked(f"{FLAGGED_ERROR}: {', '.join(categories)}", provider=result.provider)
