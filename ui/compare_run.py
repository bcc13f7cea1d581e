"""Compare mode's engine: one turn per pane run concurrently, merged into one coalesced feed, then saved.

No Gradio here: the tab (ui/compare.py) and the `/compare` API both drive `CompareRun`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from chat.providers.base import Provider
from chat.turn import Turn, TurnResult, coalesce
from chat.types import FinishReason, Message, ModelInfo, Params
from compare.pricing import PriceTable
from storage import repository as repo
from storage.errors import StorageError
from storage.models import ComparisonIds
from ui.convert import output_tokens_of
from ui.services import Services

log = logging.getLogger("parley.compare")

#: Seconds between UI updates while panes stream (the research notes: the server tops out near
#: 1k messages/s, and each update carries every pane).
UPDATE_INTERVAL = 0.08
LETTERS = "ABCD"


def blind_label(slot: int) -> str:
    return f"Model {LETTERS[slot]}"


@dataclass
class Pane:
    """One pane of a run: what it asks (model, settings, history) and, once started, its turn."""

    provider: Provider
    info: ModelInfo
    params: Params
    system_prompt: str = ""
    history: list[Message] = field(default_factory=list)  # earlier turns of this pane, no system message
    conversation_id: str | None = None  # its hidden pane conversation, for follow-ups
    turn: Turn | None = None

    @property
    def ref(self) -> str:
        return self.info.ref

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
    output_tokens: int | None
    input_tokens: int | None
    duration_ms: float | None
    finish_reason: str | None
    error: str | None
    cost: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "text": self.text,
            "ttft_ms": _round(self.ttft_ms, 1),
            "tokens_per_second": _round(self.tokens_per_second, 1),
            "output_tokens": self.output_tokens,
            "input_tokens": self.input_tokens,
            "duration_ms": _round(self.duration_ms, 1),
            "finish_reason": self.finish_reason,
            "error": self.error,
            "cost": self.cost,
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def metrics_of(r: TurnResult, prices: PriceTable, *, now: float | None = None) -> PaneMetrics:
    """The live or final metrics of one pane's turn; the duration runs on while it streams."""
    duration = r.duration_ms
    if duration is None and r.started:
        duration = ((now if now is not None else time.perf_counter()) - r.started) * 1000
    out = output_tokens_of(r)
    cost = prices.cost(r.ref, r.input_tokens, out) if r.done else None
    if cost is not None and not math.isfinite(cost):
        cost = None
    return PaneMetrics(
        model=r.ref, text=r.text, ttft_ms=r.ttft_ms, tokens_per_second=r.tokens_per_second, output_tokens=out,
        input_tokens=r.input_tokens, duration_ms=duration,
        finish_reason=r.finish_reason.value if r.finish_reason else None,
        error=r.error.message if r.error else None, cost=cost,
    )  # fmt: skip


def redact(text: str, names: Sequence[str], replacement: str = "the model") -> str:
    """`text` with every name (any case) replaced: error messages name their provider and model."""
    names = sorted({n for n in names if n}, key=len, reverse=True)
    if not text or not names:
        return text
    pattern = re.compile("|".join(re.escape(n) for n in names), re.IGNORECASE)
    return pattern.sub(replacement, text)


async def stream_concurrently(turns: Sequence[Turn], interval: float = UPDATE_INTERVAL) -> AsyncIterator[None]:
    """Run every turn at once; yield when something changed (at most once per `interval`), and once at the end.

    The turns' results are updated in place, so a consumer reads `turn.result` after each yield.
    A failing turn ends with its error set (turns never raise); the others carry on. Closing or
    cancelling this generator cancels every turn still running: each keeps its partial text and
    is marked cancelled.
    """
    changed = asyncio.Event()

    async def pump(turn: Turn) -> None:
        try:
            async with aclosing(turn.events()) as events:
                async for _ in events:
                    changed.set()
        finally:
            changed.set()

    tasks = [asyncio.create_task(pump(t)) for t in turns]
    # One future for every pane: the shared coalescing wakes early only when they have all ended,
    # and closing it early cancels them all.
    together = asyncio.gather(*tasks, return_exceptions=True)
    try:
        async with aclosing(coalesce(together, changed, None, interval)) as updates:
            async for _ in updates:
                if together.done():
                    for turn, task in zip(turns, tasks):
                        if not task.cancelled() and task.exception() is not None:
                            log.error("compare pane %s failed unexpectedly", turn.result.ref, exc_info=task.exception())
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


async def save_begin(services: Services, owner: str, prompt: str, panes: Sequence[Pane], blind: bool) -> ComparisonIds | StorageError:
    """Save the prompt in every pane conversation and the run's rows (a StorageError is returned, not raised)."""
    starts = [
        {"provider": p.info.provider, "model": p.info.id, "params": p.sent_params,
         "system_prompt": p.system_prompt or None, "conversation_id": p.conversation_id}
        for p in panes
    ]  # fmt: skip
    try:
        return await services.db(repo.begin_comparison, owner=owner, prompt=prompt, panes=starts, blind=blind)
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
                params=pane.sent_params, input_tokens=r.input_tokens, output_tokens=output_tokens_of(r),
                reasoning_tokens=r.reasoning_tokens,
                ttft_ms=round(r.ttft_ms) if r.ttft_ms is not None else None,
                duration_ms=round(r.duration_ms) if r.duration_ms is not None else None,
                finish_reason=r.finish_reason.value if r.finish_reason else "cancelled",
                error=r.error.message if r.error else None,
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
    """One prompt into every pane: start the turns and the save together, stream, save at the end.

    Iterate `stream()`; read `panes[i].turn.result` after each step. Saving happens in the
    generator's `finally`, so Stop (cancellation) and errors keep every pane's partial text.
    """

    def __init__(self, services: Services, owner: str, prompt: str, panes: Sequence[Pane], *,
                 blind: bool = False, prices: PriceTable | None = None):
        self.s = services
        self.owner = owner
        self.prompt = prompt
        self.panes = list(panes)
        self.blind = blind
        self.prices = prices or PriceTable()
        self.ids: ComparisonIds | StorageError | None = None
        self.saved: bool | None = None
        for pane in self.panes:
            messages = ([Message(role="system", content=pane.system_prompt)] if pane.system_prompt else []) + [
                *pane.history, Message(role="user", content=prompt)]  # fmt: skip
            pane.turn = Turn(pane.provider, pane.info, messages, pane.params, policy=services.policy)

    @property
    def results(self) -> list[TurnResult]:
        return [p.turn.result for p in self.panes if p.turn]

    async def stream(self, interval: float = UPDATE_INTERVAL) -> AsyncIterator[None]:
        # The prompt is saved while the providers are called: both are on the first-token path.
        save = asyncio.ensure_future(save_begin(self.s, self.owner, self.prompt, self.panes, self.blind))
        try:
            async with aclosing(stream_concurrently([p.turn for p in self.panes], interval)) as feed:  # type: ignore[misc]
                async for _ in feed:
                    yield
        finally:
            self.ids = await asyncio.shield(save)
            self.saved = await asyncio.shield(save_finish(self.s, self.owner, self.ids, self.panes, self.prices))
            if isinstance(self.ids, ComparisonIds):
                for pane, pane_ids in zip(self.panes, self.ids.panes):
                    pane.conversation_id = str(pane_ids.conversation_id)

    async def run(self) -> list[TurnResult]:
        async with aclosing(self.stream()) as feed:
            async for _ in feed:
                pass
        return self.results
