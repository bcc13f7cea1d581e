"""Compare mode's engine: one reply per pane run concurrently, merged into one coalesced feed, then saved.

A pane's reply comes from compare/engine.py, the engine batch pairs run too: a `Turn`, or a `ToolLoop`
when the run allows tools and its model supports them. No Gradio here: core/compare.py (`Comparisons`,
behind the Compare tab and the `/compare` API) drives `CompareRun`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, cast

from chat import tracing
from chat.errors import ChatError
from chat.providers.base import Provider
from chat.toolloop import ToolLoop
from chat.tools import ToolContext
from chat.turn import Turn, coalesce
from chat.types import Attachment, FinishReason, Message, ModelInfo, Params
from compare.engine import Reply, ReplyResult, UnsupportedFile, file_refusal, prompt_messages, speed_of, start_reply, uses_tools
from compare.pricing import PriceTable
from core.attachments import to_store
from core.moderation import Moderator, OutputGuard
from core.repro import stored_fields
from core.services import Services
from core.tooling import owner_search, tool_records
from core.usage import usage_columns, usage_of
from storage import repository as repo
from storage.errors import StorageError
from storage.models import ComparisonIds

log = logging.getLogger("parley.compare")

#: Seconds between UI updates while panes stream (the research notes: the server tops out near
#: 1k messages/s, and each update carries every pane).
UPDATE_INTERVAL = 0.08
LETTERS = "ABCD"

def blind_label(slot: int) -> str:
    return f"Model {LETTERS[slot]}"


@dataclass
class Pane:
    """One pane of a run: what it asks (model, settings, history) and, once started, its reply."""

    provider: Provider
    info: ModelInfo
    params: Params
    system_prompt: str = ""
    history: list[Message] = field(default_factory=list)  # earlier turns of this pane, no system message
    conversation_id: str | None = None  # its hidden pane conversation, for follow-ups
    turn: Reply | None = None
    #: Why this pane's model was not called (it cannot read the prompt's files); its reply is this error.
    refusal: str | None = None
    #: Why this pane's model cannot be called at all (its provider is not set up, say): its reply is this
    #: error and the other panes run (the /compare API gives that pane an `error`).
    unavailable: ChatError | None = None

    @property
    def ref(self) -> str:
        return self.info.ref

    @property
    def result(self) -> ReplyResult:
        """The reply's result so far (a pane's reply is made when its run is)."""
        if self.turn is None:
            raise RuntimeError(f"pane {self.ref} has not been started by a CompareRun")
        return self.turn.result

    @property
    def sent_params(self) -> dict[str, Any]:
        """The parameters actually sent (what is stored with the reply)."""
        return self.params.for_provider(self.info.params or self.provider.accepts)

    def names(self) -> list[str]:
        """Every spelling of this pane's model and provider, for blind-mode redaction."""
        return [n for n in {self.info.ref, self.info.id, self.info.label, self.info.provider, self.provider.name,
                            self.provider.label} if n and len(n) >= 2]  # fmt: skip


@dataclass(frozen=True)
class PaneMetrics:
    """What a pane shows and the API returns for one reply."""

    model: str
    text: str
    ttft_ms: float | None
    tokens_per_second: float | None
    output_tokens: int | None  # reasoning included (chat.types.Usage)
    input_tokens: int | None  # the whole prompt, cached parts included
    duration_ms: float | None
    finish_reason: str | None
    error: str | None
    cost: float | None
    reasoning_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    usage_estimated: bool = False  # Parley's estimate until the provider reports usage

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "text": self.text,
            "ttft_ms": _round(self.ttft_ms, 1),
            "tokens_per_second": _round(self.tokens_per_second, 1),
            "output_tokens": self.output_tokens,
            "input_tokens": self.input_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "usage_estimated": self.usage_estimated,
            "duration_ms": _round(self.duration_ms, 1),
            "finish_reason": self.finish_reason,
            "error": self.error,
            "cost": self.cost,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def metrics_of(r: ReplyResult, prices: PriceTable, *, now: float | None = None) -> PaneMetrics:
    """The live or final metrics of one pane's reply; the duration runs on while it streams.

    A reply with tools costs every step's tokens; its speed is its last step's, as the chat shows it.
    """
    duration = r.duration_ms
    if duration is None and r.started:
        duration = ((now if now is not None else time.perf_counter()) - r.started) * 1000
    usage = usage_of(r)
    cost = prices.usage_cost(r.ref, usage) if r.done else None
    if cost is not None and not math.isfinite(cost):
        cost = None
    return PaneMetrics(
        model=r.ref, text=r.text, ttft_ms=r.ttft_ms, tokens_per_second=speed_of(r), output_tokens=usage.output_tokens,
        input_tokens=usage.input_tokens, duration_ms=duration,
        finish_reason=r.finish_reason.value if r.finish_reason else None,
        error=r.error.message if r.error else None, cost=cost,
        reasoning_tokens=usage.reasoning_tokens, cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens, usage_estimated=usage.estimated,
    )  # fmt: skip


def redact(text: str, names: Sequence[str], replacement: str = "the model") -> str:
    """`text` with every name (any case) replaced: error messages name their provider and model."""
    names = sorted({n for n in names if n}, key=len, reverse=True)
    if not text or not names:
        return text
    pattern = re.compile("|".join(re.escape(n) for n in names), re.IGNORECASE)
    return pattern.sub(replacement, text)


async def drive(reply: Reply, changed: Callable[[], None]) -> None:
    """Run one pane's reply to its end, calling `changed` after every change.

    Uncoalesced on purpose: the panes share one coalescing feed (`stream_concurrently`).
    """
    if isinstance(reply, ToolLoop):
        await reply.run(on_change=changed)
        return
    async with aclosing(reply.events()) as events:
        async for _ in events:
            changed()


async def stream_concurrently(turns: Sequence[Reply], interval: float = UPDATE_INTERVAL,
                              guards: Sequence[OutputGuard | None] = ()) -> AsyncGenerator[None, None]:
    """Run every reply at once; yield when something changed (at most once per `interval`), and once at the end.

    `guards` (one per reply, or none): output moderation, checking each reply beside it as it grows; a
    flagged reply is stopped and withheld (core.moderation).

    The replies' results are updated in place, so a consumer reads `turn.result` after each yield.
    A failing reply ends with its error set (turns and tool loops never raise); the others carry on.
    Closing or cancelling this generator cancels every reply still running: each keeps its partial
    text (and its tool calls so far) and is marked cancelled.
    """
    changed = asyncio.Event()

    async def pump(turn: Reply, guard: OutputGuard | None) -> None:
        try:
            if guard is None:
                await drive(turn, changed.set)
            else:
                await guard.run(lambda: drive(turn, changed.set), turn.result)
        finally:
            changed.set()

    watched = list(guards) or [None] * len(turns)
    tasks = [asyncio.create_task(pump(t, g)) for t, g in zip(turns, watched)]
    # One future for every pane: the shared coalescing wakes early only when they have all ended,
    # and closing it early cancels them all.
    together = asyncio.gather(*tasks, return_exceptions=True)
    try:
        # coalesce reads a task's done/cancel/callbacks only, which the gathering future has too.
        async with aclosing(coalesce(cast("asyncio.Task[object]", together), changed, None, interval)) as updates:
            async for _ in updates:
                if together.done():
                    for turn, task in zip(turns, tasks):
                        if not task.cancelled() and task.exception() is not None:
                            log.error("compare pane %s failed unexpectedly", turn.result.ref, exc_info=task.exception())
                for turn, guard in zip(turns, watched):
                    if guard is not None and not turn.result.done:
                        guard.observe(turn.result.text)  # a check beside the stream, when enough is new
                yield
    finally:
        pending = [t for t in tasks if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        for turn in turns:
            if not turn.result.done:
                turn.result.finish_reason = FinishReason.CANCELLED


# -- storage ----------------------------------------------------------------------------------


async def save_begin(services: Services, owner: str, prompt: str, panes: Sequence[Pane], blind: bool,
                     attachments: Sequence[Attachment] = ()) -> ComparisonIds | StorageError:
    """Save the prompt (and its files) in every pane conversation and the run's rows (a StorageError is returned, not raised)."""
    starts = [
        {"provider": p.info.provider, "model": p.info.id, "params": p.sent_params,
         "system_prompt": p.system_prompt or None, "conversation_id": p.conversation_id}
        for p in panes
    ]  # fmt: skip
    # The files only when there are some: a text prompt's save is what it always was.
    extra: dict[str, Any] = {"attachments": [to_store(a) for a in attachments]} if attachments else {}
    try:
        return await services.db(repo.begin_comparison, owner=owner, prompt=prompt, panes=starts, blind=blind, **extra)
    except StorageError as e:
        log.warning("could not save a comparison of %s: %s", owner, e)
        return e


def _finish_all(*, session: Any, owner: str, ids: ComparisonIds, panes: Sequence[Pane], costs: dict[int, float | None]) -> bool:
    ok = True
    for pane_ids, pane in zip(ids.panes, panes):
        r = pane.turn.result if pane.turn else None
        if r is None:
            continue
        try:
            repo.finish_turn(
                session=session, owner=owner, message_id=pane_ids.assistant_message_id, content=r.text,
                reasoning=r.reasoning or None, provider=r.provider, model=r.model, model_version=r.model_version,
                params=pane.sent_params, **usage_columns(usage_of(r)),
                ttft_ms=round(r.ttft_ms) if r.ttft_ms is not None else None,
                duration_ms=round(r.duration_ms) if r.duration_ms is not None else None,
                finish_reason=r.finish_reason.value if r.finish_reason else "cancelled",
                error=r.error.message if r.error else None,
                tool_calls=[*calls] if (calls := tool_records(r)) else None,  # a fresh list, typed as finish_turn takes it
                **stored_fields(pane.provider, r, pane.system_prompt),
            )  # fmt: skip
        except StorageError as e:  # one pane's bad value must not lose the others
            log.warning("could not save compare pane %s: %s", pane_ids.slot, e)
            ok = False
    try:
        repo.set_comparison_costs(session=session, owner=owner, comparison_id=ids.comparison_id, costs=costs)
    except StorageError as e:
        log.warning("could not save compare costs: %s", e)
        ok = False
    return ok


async def save_finish(services: Services, owner: str, ids: ComparisonIds | StorageError | None,
                      panes: Sequence[Pane], prices: PriceTable) -> bool:
    """Write every pane's reply (whole or partial) and cost; False when anything could not be saved."""
    if not isinstance(ids, ComparisonIds):
        return False
    costs = {i: metrics_of(p.turn.result, prices).cost for i, p in enumerate(panes) if p.turn}
    try:
        return await services.db(_finish_all, owner=owner, ids=ids, panes=panes, costs=costs)
    except StorageError as e:
        log.warning("could not save a comparison of %s: %s", owner, e)
        return False


class CompareRun:
    """One prompt into every pane: start the replies and the save together, stream, save at the end.

    Iterate `stream()`; read `panes[i].turn.result` after each step. Saving happens in the
    generator's `finally`, so Stop (cancellation) and errors keep every pane's partial text.
    With `tools`, each pane whose model supports tools may call the deployment's toolbox; the
    others answer without, so one run can compare both kinds.
    """

    def __init__(self, services: Services, owner: str, prompt: str, panes: Sequence[Pane], *,
                 blind: bool = False, prices: PriceTable | None = None, tools: bool = False,
                 attachments: Sequence[Attachment] = ()):
        self.s = services
        self.owner = owner
        self.prompt = prompt
        self.panes = list(panes)
        self.blind = blind
        self.prices = prices or PriceTable()
        self.tools = tools
        self.attachments = tuple(attachments)
        self.ids: ComparisonIds | StorageError | None = None
        self.saved: bool | None = None
        for pane in self.panes:
            if pane.unavailable is not None:
                pane.refusal = pane.unavailable.message
                pane.turn = self._refused(pane, prompt, pane.unavailable)
                continue
            pane.refusal = file_refusal(pane.info, self.attachments, self.s.registry) if self.attachments else None
            if pane.refusal is not None:
                pane.turn = self._refused(pane, prompt, pane.refusal)
                continue
            messages = prompt_messages(prompt, system=pane.system_prompt, history=pane.history, attachments=self.attachments)
            pane.turn = self._reply(pane, messages)

    def _refused(self, pane: Pane, prompt: str, why: str | ChatError) -> Reply:
        """A reply that is never started: it ends at once with `why` as its error (no call, no charge)."""
        turn = Turn(pane.provider, pane.info, prompt_messages(prompt, system=pane.system_prompt), pane.params,
                    policy=self.s.policy)
        r = turn.result
        r.error = why if isinstance(why, ChatError) else UnsupportedFile(why, provider=pane.info.provider)
        r.finish_reason = FinishReason.ERROR
        r.finish_detail = r.error.kind
        r.duration_ms = 0.0
        return turn

    def uses_tools(self, pane: Pane) -> bool:
        """Whether this run lets `pane` call tools: asked for, offered by the deployment, supported by its model."""
        return self.tools and uses_tools(pane.info, self.s.toolbox)

    def _reply(self, pane: Pane, messages: list[Message]) -> Reply:
        toolbox = self.s.toolbox if self.tools else None
        # The search tool sees the run's owner only, as in the chat.
        context = ToolContext(owner=self.owner, search=owner_search(self.s)) if self.uses_tools(pane) else None
        return start_reply(pane.provider, pane.info, messages, pane.params, policy=self.s.policy, toolbox=toolbox,
                           context=context)  # fmt: skip

    @property
    def results(self) -> list[ReplyResult]:
        return [p.turn.result for p in self.panes if p.turn]

    async def stream(self, interval: float = UPDATE_INTERVAL) -> AsyncGenerator[None, None]:
        # The prompt is saved while the providers are called: both are on the first-token path.
        save = asyncio.ensure_future(save_begin(self.s, self.owner, self.prompt, self.panes, self.blind, self.attachments))
        running = [p.turn for p in self.panes if p.turn and p.refusal is None]
        moderator = Moderator.of(self.s)
        guards = [moderator.guard() for _ in running]  # None unless MODERATION=openai
        # Off (no OTLP endpoint): None and [] (chat.tracing).
        run_span = tracing.group("compare", {"parley.panes": len(self.panes), "parley.blind": self.blind})
        pane_spans = tracing.start_all(running, parent=run_span, role="compare")
        try:
            async with aclosing(stream_concurrently(running, interval, guards)) as feed:
                async for _ in feed:
                    yield
        finally:
            # After Stop, what each pane kept is checked before it is stored.
            await asyncio.shield(asyncio.gather(*(g.settle(t.result) for g, t in zip(guards, running) if g)))
            tracing.end_all(pane_spans)
            tracing.end(run_span)
            self.ids = await asyncio.shield(save)
            self.saved = await asyncio.shield(save_finish(self.s, self.owner, self.ids, self.panes, self.prices))
            if isinstance(self.ids, ComparisonIds):
                for pane, pane_ids in zip(self.panes, self.ids.panes):
                    pane.conversation_id = str(pane_ids.conversation_id)

    async def run(self) -> list[ReplyResult]:
        async with aclosing(self.stream()) as feed:
            async for _ in feed:
                pass
        return self.results
