"""Compare use cases: run a comparison, vote, the leaderboard and the exports. No Gradio.

`Comparisons` holds the rules the Compare tab and the `/compare` API share: the inputs (2-4 models,
the prompt, parameters, system prompts), the rate limit (one call per pane, all charged before any
starts, or none runs), positions (every run's models take random panes, blind or not), blind secrecy
(the order lives in the session state, never sent to the browser), saving (core/compare_run.py's
`CompareRun` saves in its `finally`), the vote, the leaderboard's ratings and the exports' text.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

from pydantic import ValidationError

from chat.context import clean_text
from chat.errors import ChatError, NotConfigured
from chat.providers.base import Provider
from chat.types import Attachment, Message, ModelInfo, Params
from compare.engine import ReplyResult, file_refusal
from compare.pricing import PriceError, PriceTable
from compare.ratings import Leaderboard
from core.attachments import FileProblem, limits_of, read_uploads
from core.compare_board import ROUNDS, Board, build_board
from core.compare_export import to_csv, to_jsonl
from core.compare_run import CompareRun, Pane, metrics_of
from core.experiment import comparisons_experiment
from core.moderation import Moderator
from core.params import params_error
from core.services import Services
from storage import repository as repo
from storage.errors import StorageError
from storage.models import MAX_PANES, MIN_PANES, ComparisonIds

Verdict = Literal["slot", "tie", "both_bad"]
#: Puts a new comparison's models in random panes (in place). Tests that check a fixed display order pin it.
shuffle = random.SystemRandom().shuffle
ExportFormat = Literal["jsonl", "csv", "experiment"]


class CompareProblem(Exception):
    """Why a comparison (or a vote) was refused, for the status line; nothing was sent or saved."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class PaneInput:
    """One pane as the tab's settings give it: a model, a system prompt and a temperature (empty: the sidebar's)."""

    ref: str
    system_prompt: str
    temperature: float | None


@dataclass(frozen=True)
class Standings:
    """The leaderboard's data: how many votes it counts, whose, and the ratings (core/compare_board.py)."""

    votes: int
    shared: bool
    result: Board

    @property
    def board(self) -> Leaderboard:
        return self.result.board


def pane_params(base: Params, temperature: float | None) -> Params:
    """The sidebar's parameters with the pane's own temperature, when it has one."""
    if temperature is None:
        return base
    return Params.model_validate({**base.model_dump(), "temperature": temperature})


def fingerprint(inputs: Sequence[PaneInput], blind: bool, base: Params, system_prompt: str) -> str:
    """Same panes and settings → a follow-up in the same panes; anything changed → a new comparison."""
    return json.dumps([[(p.ref, p.system_prompt, p.temperature) for p in inputs], blind, base.model_dump(), system_prompt],
                      sort_keys=True, default=str)


def tool_calls_of(result: ReplyResult) -> list[dict[str, Any]]:
    """A pane's tool calls as the /compare API returns them (none for a reply without tools)."""
    calls = []
    for t in getattr(result, "tools", ()):
        call = t.as_dict()
        call["duration_ms"] = None if t.duration_ms is None else round(t.duration_ms, 1)
        calls.append(call)
    return calls


def unavailable_pane(ref: str, error: ChatError, system_prompt: str) -> Pane:
    """A pane for a model that cannot be called (its provider is not set up): it calls nothing, and
    its reply is `error`. Its stand-in provider only names the model in the results and the store."""
    name, sep, model = ref.strip().partition(":")
    stand_in = Provider()
    stand_in.name = stand_in.label = name if sep else "unknown"
    info = ModelInfo(provider=stand_in.name, id=model if sep else name)
    return Pane(provider=stand_in, info=info, params=Params(), system_prompt=system_prompt, unavailable=error)


def export_name(fmt: ExportFormat) -> str:
    extension = "experiment.json" if fmt == "experiment" else fmt
    return f"parley-comparisons-{datetime.now(UTC):%Y%m%d-%H%M%S}.{extension}"


class Comparisons:
    """Run a comparison, vote, the leaderboard and the exports: the rules every compare surface calls."""

    def __init__(self, services: Services, prices: PriceTable):
        self.s = services
        self.default_prices = prices

    # -- inputs -----------------------------------------------------------------------------------

    def prices(self, rows: Any) -> PriceTable:
        """A session's own price rows (Apply in the tab), else the app's table."""
        if not rows:
            return self.default_prices
        try:
            return PriceTable.from_rows(rows)
        except PriceError:
            return self.default_prices

    def check_message(self, text: str) -> str:
        """The prompt as sent: cleaned, not empty, within the deployment's limit."""
        if text is not None and not isinstance(text, str):  # the API's JSON may carry anything
            raise CompareProblem("The prompt must be text.")
        text = clean_text(text or "").strip()
        if not text:
            raise CompareProblem("Type a prompt first: an empty prompt is not sent.")
        limit = self.s.config.max_message_chars
        if len(text) > limit:
            raise CompareProblem(f"This prompt is {len(text):,} characters long; the limit is {limit:,}.")
        return text

    def resolve(self, ref: str, where: str) -> tuple[Provider, ModelInfo]:
        ref = (ref or "").strip()
        if not ref:
            raise CompareProblem(f"{where}: pick a model (provider:model).")
        try:
            return self.s.registry.resolve(ref)
        except ChatError as e:
            raise CompareProblem(f"{where}: {e.message}") from e

    def api_panes(self, models: Any, system_prompt: str = "") -> list[Pane]:
        """The panes of an API call: 2-4 models (a list, or one comma-separated string), default parameters."""
        if isinstance(models, str):
            models = models.split(",")
        if not isinstance(models, list) or not MIN_PANES <= len(models) <= MAX_PANES:
            raise CompareProblem(f"Give {MIN_PANES} to {MAX_PANES} models as a list of provider:model.")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise CompareProblem("The system prompt must be text.")
        system = clean_text(system_prompt or "").strip()
        panes = []
        for i, ref in enumerate(models):
            try:
                provider, info = self.resolve(str(ref), f"Model {i + 1} ({str(ref)[:80]})")
            except CompareProblem as e:
                cause = e.__cause__
                if not isinstance(cause, NotConfigured):
                    raise  # an empty or malformed name: the call is refused, nothing runs
                # A provider that is not set up (or unknown) fails its own pane; the others still answer.
                panes.append(unavailable_pane(str(ref), cause, system))
                continue
            panes.append(Pane(provider=provider, info=info, params=Params(), system_prompt=system))
        if all(p.unavailable is not None for p in panes):
            raise CompareProblem(f"Model 1 ({str(models[0])[:80]}): {panes[0].unavailable}")
        return panes

    def session_panes(self, session: dict[str, Any], inputs: Sequence[PaneInput], base: Params, system_prompt: str,
                      blind: bool) -> list[Pane]:
        """Panes in display order: a follow-up continues the session's panes, else a new, shuffled set.

        `session` (the tab's server-side state) is updated in place when a new comparison starts.
        """
        if not MIN_PANES <= len(inputs) <= MAX_PANES:
            raise CompareProblem(f"Compare {MIN_PANES} to {MAX_PANES} panes.")
        key = fingerprint(inputs, blind, base, system_prompt)
        resolved = []
        for i, p in enumerate(inputs):
            provider, info = self.resolve(p.ref, f"Pane {i + 1}")
            try:
                params = pane_params(base, p.temperature)
            except ValidationError as e:
                raise CompareProblem(f"Pane {i + 1}: " + params_error(e)) from e
            resolved.append((provider, info, params, p.system_prompt or system_prompt))
        if session.get("key") != key:
            # Every comparison, blind or not, puts its models in random panes: pane A (the first) tends to
            # win more often, and a random order keeps that from favouring any model (the slot is stored).
            order = list(range(len(inputs)))
            shuffle(order)
            session.clear()
            session.update(key=key, blind=blind, revealed=not blind, order=order,
                           panes=[{"conversation_id": None, "history": [], "display": [], "display_full": []} for _ in order])  # fmt: skip
        panes = []
        for slot, index in enumerate(session["order"]):
            provider, info, params, sp = resolved[index]
            state = session["panes"][slot]
            # A user turn's files ride along in the session's history (server-side state, never the browser's).
            history = [Message(role=m["role"], content=m["content"], attachments=tuple(m.get("attachments") or ()))
                       for m in state["history"]]
            panes.append(Pane(provider=provider, info=info, params=params, system_prompt=sp, history=history,
                              conversation_id=state["conversation_id"]))  # fmt: skip
        return panes

    # -- files ------------------------------------------------------------------------------------

    async def read_files(self, files: Sequence[str | os.PathLike[str]], panes: Sequence[Pane]) -> list[Attachment]:
        """The prompt's uploads, read and checked off the event loop (CompareProblem when a file is refused).

        Every pane gets the files; a pane whose model cannot read one shows why and the others run.
        When no pane can read them, the whole comparison is refused: nothing would run.
        """
        if not files:
            return []
        try:
            attachments = await read_uploads(list(files), limits_of(self.s.config))
        except FileProblem as e:
            raise CompareProblem(e.message) from e
        refusals = [file_refusal(p.info, attachments, self.s.registry) for p in panes]
        if panes and all(refusals):
            raise CompareProblem(str(refusals[0]))
        return attachments

    def runnable(self, panes: Sequence[Pane], attachments: Sequence[Attachment] = ()) -> list[Pane]:
        """The panes that will call their model: all of them, less those whose model is not set up or
        cannot read the files."""
        panes = [p for p in panes if p.unavailable is None]
        if not attachments:
            return panes
        return [p for p in panes if file_refusal(p.info, attachments, self.s.registry) is None]

    # -- running ----------------------------------------------------------------------------------

    async def charge(self, request: Any, owner: str, panes: Sequence[Pane], attachments: Sequence[Attachment] = (),
                     prompt: str = "") -> None:
        """Every pane that runs is a provider call: all are charged before any starts, or none runs (CompareProblem);
        then the `prompt` is moderated (MODERATION=openai): a flagged one is refused whole (CompareProblem).

        A pane whose model cannot read the prompt's files calls nothing and is not charged.
        """
        calls = len(self.runnable(panes, attachments))
        verdict = await self.s.limiter.charge(self.s.limiter.identity(request, owner), calls=calls)
        if not verdict.allowed:
            raise CompareProblem(verdict.message)
        # MODERATION=openai checks the prompt as the chat checks a message: refused, it reaches no model.
        flagged = await Moderator.of(self.s).check(prompt, "compare prompt") if prompt else None
        if flagged:
            raise CompareProblem(f"This prompt was flagged by the moderation check ({', '.join(flagged)}): it was not "
                                 "sent to any model. Please rephrase it.")

    def start(self, owner: str, prompt: str, panes: Sequence[Pane], *, blind: bool = False,
              prices: PriceTable | None = None, tools: bool = False, attachments: Sequence[Attachment] = ()) -> CompareRun:
        """The run of one prompt (and its files) in every pane; iterate its `stream()` (it saves when it ends, Stop included)."""
        return CompareRun(self.s, owner, prompt, panes, blind=blind, prices=prices or self.default_prices, tools=tools,
                          attachments=attachments)

    async def compare(self, *, owner: str, request: Any, message: str, models: Any, system_prompt: str = "",
                      tools: bool = False, files: Sequence[str | os.PathLike[str]] = ()) -> list[dict[str, Any]]:
        """The `/compare` API: one prompt (with files) to 2-4 models at once, saved; per model its text, metrics and tool calls."""
        text = self.check_message(message)
        asked = self.api_panes(models, system_prompt)
        # The models take random panes, as in the tab (pane A's advantage must not favour a model).
        order = list(range(len(asked)))
        shuffle(order)
        panes = [asked[i] for i in order]
        attachments = await self.read_files(files, panes)
        await self.charge(request, owner, panes, attachments, prompt=text)
        run = self.start(owner, text, panes, tools=tools, attachments=attachments)
        await run.run()
        # The stored comparison's id (None when it could not be saved): what `/judge` takes.
        cid = str(run.ids.comparison_id) if isinstance(run.ids, ComparisonIds) else None
        # The answer keeps the models' order; `position` is the pane (slot, 0 = A) each model was given.
        items = [{**metrics_of(r, self.default_prices).as_dict(), "position": slot, "tools": tool_calls_of(r), "comparison_id": cid}
                 for slot, r in enumerate(run.results)]
        by_model = dict(zip(order, items, strict=True))
        return [by_model[i] for i in range(len(asked))]

    # -- votes, leaderboard, exports ---------------------------------------------------------------

    async def vote(self, *, owner: str, comparison_id: str, choice: str, panes: int) -> tuple[Verdict, int | None]:
        """Store the vote on a saved run: a pane's slot ("0".."3"), "tie" or "both_bad"; returns (verdict, winner slot)."""
        verdict: Verdict
        slot: int | None = None
        if choice.isdigit():
            verdict, slot = "slot", int(choice)
            if not 0 <= slot < panes:
                raise CompareProblem("There is no such pane.")
        elif choice in ("tie", "both_bad"):
            verdict = "tie" if choice == "tie" else "both_bad"
        else:
            raise CompareProblem(f"Unknown vote {choice[:20]!r}.")
        try:
            await self.s.db(repo.vote_comparison, owner=owner, comparison_id=comparison_id, verdict=verdict, winner_slot=slot)
        except StorageError as e:
            raise CompareProblem(f"The vote could not be saved: {e.message}") from e
        return verdict, slot

    async def standings(self, *, owner: str, blind_only: bool, style: bool = False,
                        pair: tuple[str, str] | None = None) -> Standings:
        """The leaderboard over the owner's votes (everyone's with SHARED_LEADERBOARD); StorageError passes through.

        `style`: also the style-controlled ratings; `pair`: two models to report the votes needed to separate.
        """
        shared = self.s.config.shared_leaderboard
        records = await self.s.db(repo.comparison_votes, owner=None if shared else owner, blind_only=bool(blind_only))
        loop = asyncio.get_running_loop()
        board = await loop.run_in_executor(self.s.executor, partial(build_board, records, rounds=ROUNDS, style=style, pair=pair))
        return Standings(votes=len(records), shared=shared, result=board)

    async def export(self, *, owner: str, fmt: ExportFormat) -> tuple[str, str]:
        """The owner's runs and votes as (file name, text): JSONL, CSV (core/compare_export.py) or an experiment file
        (core/experiment.py); StorageError passes through."""
        details = await self.s.db(repo.export_comparisons, owner=owner)
        if fmt == "experiment":
            return export_name(fmt), comparisons_experiment(details)
        return export_name(fmt), to_jsonl(details) if fmt == "jsonl" else to_csv(details)
