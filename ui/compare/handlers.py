"""The compare tab's handlers and the /compare API: every one resolves the owner itself.

Blind mode keeps the model names on the server: the pane order and the names live in the
session's gr.State (never sent to the browser) until the vote, and everything rendered before it
is built from "Model A"-style labels, kind-only error texts and no costs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import gradio as gr
import pandas as pd
from pydantic import ValidationError

from chat.context import clean_text
from chat.errors import ChatError
from chat.types import Message, Params
from compare.pricing import ROW_COLUMNS, PriceError, PriceTable
from core.compare_export import to_csv, to_jsonl
from core.compare_run import LETTERS, CompareRun, Pane, blind_label, metrics_of
from core.identity import owner_for
from core.services import Services
from storage import repository as repo
from storage.errors import StorageError
from storage.models import MAX_PANES, MIN_PANES, ComparisonIds
from ui.chat import model_label, params_error, params_from_inputs
from ui.compare.board import build_board, rating_plot_html, table_frame, win_matrix_html
from ui.compare.view import chart_frames, header_markdown, metrics_markdown, reply_bubbles
from ui.convert import content_text
from ui.exports import exports_for

if TYPE_CHECKING:
    from ui.compare.tab import CompareUI

log = logging.getLogger("parley.compare")

TEMPERATURE_CHOICES = [("Sidebar's", ""), *[(v, v) for v in ("0", "0.3", "0.7", "1", "1.3", "1.7", "2")]]
VERDICT_TEXT = {"tie": "a tie", "both_bad": "all answers bad"}
STOP_WAIT = 10.0  # seconds the Stop handler waits at most for the cancelled run to save (usually ms)


# -- inputs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaneInput:
    ref: str
    system_prompt: str
    temperature: float | None


class InputProblem(Exception):
    """A message for the status line; nothing was sent."""


def _pane_params(base: Params, temperature: float | None) -> Params:
    if temperature in (None, ""):
        return base
    return Params.model_validate({**base.model_dump(), "temperature": temperature})


def _fingerprint(inputs: list[PaneInput], blind: bool, base: Params, system_prompt: str) -> str:
    """Same panes and settings → a follow-up in the same panes; anything changed → a new comparison."""
    return json.dumps([[(p.ref, p.system_prompt, p.temperature) for p in inputs], blind, base.model_dump(), system_prompt],
                      sort_keys=True, default=str)


class CompareTab:
    """Handlers of the compare tab and the /compare API; every one resolves the owner itself."""

    def __init__(self, services: Services, prices: PriceTable):
        self.s = services
        self.default_prices = prices

    # -- shared by the UI and the API ---------------------------------------------------------

    def _prices(self, rows: Any) -> PriceTable:
        if not rows:
            return self.default_prices
        try:
            return PriceTable.from_rows(rows)
        except PriceError:
            return self.default_prices

    def _resolve(self, ref: str, where: str) -> tuple[Any, Any]:
        ref = (ref or "").strip()
        if not ref:
            raise InputProblem(f"{where}: pick a model (provider:model).")
        try:
            return self.s.registry.resolve(ref)
        except ChatError as e:
            raise InputProblem(f"{where}: {e.message}") from e

    def _name(self, pane: Pane) -> str:
        return model_label(pane.info, pane.provider.label)

    def _check_message(self, message: Any) -> str:
        text = clean_text(content_text(message)).strip()
        if not text:
            raise InputProblem("Type a prompt first: an empty prompt is not sent.")
        limit = self.s.config.max_message_chars
        if len(text) > limit:
            raise InputProblem(f"This prompt is {len(text):,} characters long; the limit is {limit:,}.")
        return text

    # -- the API ------------------------------------------------------------------------------

    async def api_compare(
        self,
        message: str,
        models: list[str],
        system_prompt: str = "",
        tools: bool = False,
        request: gr.Request = None,  # type: ignore[assignment]
        profile: gr.OAuthProfile | None = None,
    ) -> list[dict[str, Any]]:
        """Send one prompt to 2-4 models at once; returns per model its text and metrics.

        Each item: model, text, ttft_ms, tokens_per_second, output_tokens (reasoning included),
        input_tokens (the whole prompt), reasoning_tokens, cached_input_tokens and cache_write_tokens
        (parts of input_tokens), usage_estimated (true when the provider reported no usage),
        duration_ms, finish_reason, error, cost (USD, null when unpriced), and tools: the tool
        calls the model made (id, name, arguments, result, error, status, duration_ms, step), empty
        unless `tools` is true and the model supports tools (the others answer without). One
        failing model gives an item with `error` set; the others still answer.
        """
        owner = owner_for(request, profile, None)
        try:
            text = self._check_message(message)
            if isinstance(models, str):
                models = [m for m in models.split(",")]
            if not isinstance(models, list) or not MIN_PANES <= len(models) <= MAX_PANES:
                raise InputProblem(f"Give {MIN_PANES} to {MAX_PANES} models as a list of provider:model.")
            panes = []
            for i, ref in enumerate(models):
                provider, info = self._resolve(str(ref), f"Model {i + 1} ({str(ref)[:80]})")
                panes.append(Pane(provider=provider, info=info, params=Params(),
                                  system_prompt=clean_text(system_prompt or "").strip()))
        except InputProblem as e:
            raise gr.Error(str(e)) from None
        # Every pane is a provider call: all are charged before any starts, or none runs.
        verdict = await self.s.limiter.charge(self.s.limiter.identity(request, owner), calls=len(panes))
        if not verdict.allowed:
            raise gr.Error(verdict.message)
        prices = self.default_prices
        run = CompareRun(self.s, owner, text, panes, prices=prices, tools=bool(tools))
        await run.run()
        return [{**metrics_of(r, prices).as_dict(), "tools": tool_calls_of(r)} for r in run.results]

    # -- the tab ------------------------------------------------------------------------------

    def read_inputs(self, data: dict[Any, Any], ui: "CompareUI") -> tuple[int, list[PaneInput], Params, str]:
        count = int(data[ui.pane_count] or MIN_PANES)
        count = min(max(count, MIN_PANES), MAX_PANES)
        inputs = []
        for i in range(count):
            temp = str(data[ui.temperatures[i]] if data[ui.temperatures[i]] is not None else "").strip()
            try:
                temperature = float(temp) if temp else None
            except ValueError as e:
                raise InputProblem(f"Pane {i + 1}: the temperature must be a number from 0 to 2, got {temp[:20]!r}.") from e
            inputs.append(PaneInput(ref=(data[ui.models[i]] or "").strip(),
                                    system_prompt=clean_text(data[ui.system_prompts[i]] or "").strip(),
                                    temperature=temperature))  # fmt: skip
        try:
            p = [data[c] for c in ui.ctx.params]
            base = params_from_inputs(*p)
        except ValidationError as e:
            raise InputProblem(params_error(e)) from e
        except (TypeError, ValueError) as e:
            raise InputProblem(f"Invalid parameters: {e}. Nothing was sent.") from e
        return count, inputs, base, clean_text(data[ui.ctx.system_prompt] or "").strip()

    def _build_panes(self, session: dict[str, Any], inputs: list[PaneInput], base: Params, system_prompt: str,
                     blind: bool) -> list[Pane]:
        """Panes in display order: a follow-up continues the session's panes, else a new (shuffled) set."""
        key = _fingerprint(inputs, blind, base, system_prompt)
        resolved = []
        for i, p in enumerate(inputs):
            provider, info = self._resolve(p.ref, f"Pane {i + 1}")
            try:
                params = _pane_params(base, p.temperature)
            except ValidationError as e:
                raise InputProblem(f"Pane {i + 1}: " + params_error(e)) from e
            resolved.append((provider, info, params, p.system_prompt or system_prompt))
        if session.get("key") != key:
            order = list(range(len(inputs)))
            if blind:
                random.SystemRandom().shuffle(order)
            session.clear()
            session.update(key=key, blind=blind, revealed=not blind, order=order,
                           panes=[{"conversation_id": None, "history": [], "display": [], "display_full": []} for _ in order])  # fmt: skip
        panes = []
        for slot, index in enumerate(session["order"]):
            provider, info, params, sp = resolved[index]
            state = session["panes"][slot]
            history = [Message(role=m["role"], content=m["content"]) for m in state["history"]]
            panes.append(Pane(provider=provider, info=info, params=params, system_prompt=sp, history=history,
                              conversation_id=state["conversation_id"]))  # fmt: skip
        return panes

    @staticmethod
    def _names(session: dict[str, Any]) -> list[str | None]:
        """The pane headers' model names: none while blind, the real names after the vote (or when not blind)."""
        names: list[str] = session.get("names") or []
        if session.get("blind") and not session.get("revealed"):
            return [None] * len(names)
        return list(names)

    @staticmethod
    def _detail(pane: Pane, run: CompareRun) -> str:
        bits = [pane.ref]
        if pane.params.temperature is not None:
            bits.append(f"temperature {pane.params.temperature:g}")
        if pane.system_prompt:
            sp = pane.system_prompt
            bits.append("system: " + (sp if len(sp) <= 60 else sp[:59] + "…"))
        if run.tools and run.s.toolbox is not None:  # says why a pane made no tool call when the others did
            bits.append("tools" if run.uses_tools(pane) else "no tools (not supported)")
        return " · ".join(bits)

    def _headers(self, ui: "CompareUI", session: dict[str, Any]) -> dict[Any, Any]:
        names = self._names(session)
        details = session.get("details") or [""] * len(names)
        out: dict[Any, Any] = {}
        for i in range(MAX_PANES):
            if i < len(names):
                label = blind_label(i)
                out[ui.headers[i]] = header_markdown(label, names[i], details[i] if names[i] else "")
                out[ui.pane_columns[i]] = gr.update(visible=True)
            else:
                out[ui.pane_columns[i]] = gr.update(visible=False)
        return out

    async def run(self, data: dict[Any, Any], request: gr.Request, profile: gr.OAuthProfile | None = None):
        """Stream one prompt into every pane at once; save the run; offer the vote."""
        ui: CompareUI = self.ui
        owner = owner_for(request, profile, data[ui.ctx.owner])
        session: dict[str, Any] = data[ui.session]
        if not isinstance(session, dict):  # never for a browser session; the state starts as {}
            session = {}
        if session.get("running"):
            yield {ui.status: "⏳ The last prompt is still streaming: wait for it or press Stop."}
            return
        blind = bool(data[ui.blind])
        try:
            text = self._check_message(data[ui.message])
            _count, inputs, base, system_prompt = self.read_inputs(data, ui)
            panes = self._build_panes(session, inputs, base, system_prompt, blind)
        except InputProblem as e:
            yield {ui.status: f"⚠️ {e}"}
            return
        verdict = await self.s.limiter.charge(self.s.limiter.identity(request, owner), calls=len(panes))
        if not verdict.allowed:
            yield {ui.status: f"⚠️ {verdict.message}"}
            return

        prices = self._prices(data[ui.prices_state])
        hidden = bool(session.get("blind") and not session.get("revealed"))
        secret_names = [n for p in panes for n in p.names()] if hidden else []
        run = CompareRun(self.s, owner, text, panes, blind=bool(session.get("blind")), prices=prices,
                         tools=bool(data[ui.tools]))
        session.update(running=True, comparison_id=None, voted=False, prompt=text,
                       names=[self._name(p) for p in panes], refs=[p.ref for p in panes],
                       details=[self._detail(p, run) for p in panes])
        first = {**self._headers(ui, session), ui.message: "", ui.vote_row: gr.update(visible=False),
                 # In blind mode the settings (which list the models, in another order) fold away.
                 ui.config_accordion: gr.update(open=False) if hidden else gr.skip(),
                 ui.charts: gr.update(visible=False),
                 ui.status: "⏳ Streaming into every pane at once…" + (" Names are hidden until you vote." if hidden else "")}  # fmt: skip
        try:
            async with aclosing(run.stream()) as feed:
                async for _ in feed:
                    update = first | self._pane_values(ui, session, panes, text, prices, secret_names, live=True)
                    first = {}
                    yield update
        finally:
            self._remember(session, run, text, prices, secret_names)
        out = self._after_run(ui, session)
        if any(r.error for r in run.results):
            out[ui.status] += " One or more panes failed: see the notice in the pane."
        yield out

    def _pane_values(self, ui: "CompareUI", session: dict[str, Any], panes: list[Pane], prompt: str,
                     prices: PriceTable, secret_names: list[str], *, live: bool) -> dict[Any, Any]:
        hidden = bool(secret_names)
        out: dict[Any, Any] = {}
        for i, pane in enumerate(panes):
            r = pane.turn.result
            state = session["panes"][i]
            display = state["display"] if secret_names else state["display_full"]
            out[ui.chatbots[i]] = [*display, {"role": "user", "content": prompt}, *reply_bubbles(r, hide=secret_names)]
            out[ui.metrics[i]] = metrics_markdown(metrics_of(r, prices), live=live and not r.done, show_cost=not hidden)
        return out

    def _remember(self, session: dict[str, Any], run: CompareRun, prompt: str, prices: PriceTable,
                  secret_names: list[str]) -> None:
        """Fold the finished (or stopped) run into the session, in place: Stop gives no chance to return it."""
        for i, pane in enumerate(run.panes):
            r = pane.turn.result
            state = session["panes"][i]
            state["conversation_id"] = pane.conversation_id
            state["history"].append({"role": "user", "content": prompt})
            if r.text:
                state["history"].append({"role": "assistant", "content": r.text})
            else:  # keep user/assistant alternating for providers that insist on it
                state["history"].pop()
            turn = [{"role": "user", "content": prompt}]
            state["display"] += [*turn, *reply_bubbles(r, hide=secret_names)]
            # What the pane shows once the names are out (provider error messages in full).
            state["display_full"] += [*turn, *reply_bubbles(r)]
        session["metrics"] = [metrics_of(r, prices) for r in run.results]
        session["comparison_id"] = str(run.ids.comparison_id) if isinstance(run.ids, ComparisonIds) else None
        session["saved"] = bool(run.saved)
        session["running"] = False

    def _after_run(self, ui: "CompareUI", session: dict[str, Any]) -> dict[Any, Any]:
        """Every pane as saved, the charts, the vote buttons and the status line, after a run or a vote."""
        hidden = bool(session.get("blind") and not session.get("revealed"))
        metrics = session.get("metrics") or []
        count = len(session.get("panes") or [])
        out: dict[Any, Any] = self._headers(ui, session)
        for i in range(count):
            pane = session["panes"][i]
            out[ui.chatbots[i]] = pane["display"] if hidden else pane["display_full"]
            if i < len(metrics):
                out[ui.metrics[i]] = metrics_markdown(metrics[i], live=False, show_cost=not hidden)
        frames = chart_frames(LETTERS[: len(metrics)], metrics, show_cost=not hidden)
        for key, plot in ui.plots.items():
            out[plot] = gr.update(value=frames[key], visible=key != "cost" or not hidden)
        out[ui.charts] = gr.update(visible=bool(metrics))
        can_vote = bool(session.get("comparison_id")) and not session.get("voted")
        out.update(self._vote_buttons(ui, count, can_vote))
        if session.get("voted"):
            status = "🗳️ Voted. Send a follow-up (each pane keeps its own history) or start a new comparison."
        elif session.get("comparison_id"):
            status = "✅ Done. " + ("Which answer is better? Vote to reveal the names." if hidden
                                   else "Vote for the best answer, or send a follow-up: each pane keeps its own history.")
        else:
            status = "⚠️ Done, but this comparison could not be saved (the database is unavailable), so it cannot be voted on."
        out[ui.status] = status
        out[ui.session] = session
        return out

    def _vote_buttons(self, ui: "CompareUI", count: int, visible: bool) -> dict[Any, Any]:
        out: dict[Any, Any] = {ui.vote_row: gr.update(visible=visible)}
        for i, button in enumerate(ui.vote_slot_buttons):
            letter = LETTERS[i]
            label = (f"👈 {letter} is better" if i == 0 else f"👉 {letter} is better") if count == 2 else f"🏆 {letter} is best"
            out[button] = gr.update(visible=i < count, value=label)
        out[ui.vote_bad] = gr.update(value="👎 Both bad" if count == 2 else "👎 All bad")
        return out

    async def stop(self, session: dict[str, Any], owner_state: str | None, request: gr.Request,
                   profile: gr.OAuthProfile | None = None):
        """After Stop cancelled the run: wait for its save, then show every pane's kept text."""
        owner_for(request, profile, owner_state)  # only this session's own state is read
        ui = self.ui
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_WAIT
        while isinstance(session, dict) and session.get("running") and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if not isinstance(session, dict) or not session.get("panes") or session.get("running"):
            return {ui.status: "⏹ Stopped."}
        out = self._after_run(ui, session)
        out[ui.status] = "⏹ Stopped. Every pane's text so far is kept and saved." + (
            " You can still vote." if session.get("comparison_id") else "")
        return out

    async def vote(self, choice: str, session: dict[str, Any], owner_state: str | None, request: gr.Request,
                   profile: gr.OAuthProfile | None = None):
        """Store the vote for the last run and reveal the names."""
        owner = owner_for(request, profile, owner_state)
        ui = self.ui
        if not isinstance(session, dict) or not session.get("comparison_id") or session.get("voted"):
            return {ui.status: "⚠️ There is no finished comparison to vote on."}
        verdict, slot = ("slot", int(choice)) if choice.isdigit() else (choice, None)
        if verdict == "slot" and not 0 <= slot < len(session.get("names") or []):
            return {ui.status: "⚠️ There is no such pane."}
        try:
            await self.s.db(repo.vote_comparison, owner=owner, comparison_id=session["comparison_id"],
                            verdict=verdict, winner_slot=slot)
        except StorageError as e:
            return {ui.status: f"⚠️ The vote could not be saved: {e.message}"}
        session["voted"] = True
        session["revealed"] = True
        names = session["names"]
        out = self._after_run(ui, session)
        refs = session.get("refs") or [""] * len(names)
        result = f"{blind_label(slot)} wins" if verdict == "slot" else VERDICT_TEXT[verdict]
        reveal = "; ".join(f"{blind_label(i)} was **{n}** (`{r}`)" for i, (n, r) in enumerate(zip(names, refs)))
        out[ui.status] = f"🗳️ Vote saved: {result}. {reveal}."
        return out

    def new_comparison(self, session: dict[str, Any], owner_state: str | None, request: gr.Request,
                       profile: gr.OAuthProfile | None = None):
        owner_for(request, profile, owner_state)
        ui = self.ui
        if isinstance(session, dict) and not session.get("running"):
            session.clear()
        out: dict[Any, Any] = {ui.session: session, ui.status: "New comparison: the next prompt starts fresh panes.",
                               ui.charts: gr.update(visible=False), ui.vote_row: gr.update(visible=False)}  # fmt: skip
        for i in range(MAX_PANES):
            out[ui.chatbots[i]] = []
            out[ui.metrics[i]] = ""
            out[ui.headers[i]] = header_markdown(f"Pane {i + 1}", None)
        return out

    def show_panes(self, count: Any, blind: bool):
        """The pane count and blind mode decide how many settings columns and panes show."""
        ui = self.ui
        n = min(max(int(count or MIN_PANES), MIN_PANES), MAX_PANES)
        out: dict[Any, Any] = {}
        for i in range(MAX_PANES):
            out[ui.config_columns[i]] = gr.update(visible=i < n)
            out[ui.pane_columns[i]] = gr.update(visible=i < n)
        return out

    # -- prices -------------------------------------------------------------------------------

    def apply_prices(self, table: Any, owner_state: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """Validate the edited price table and keep it for this session."""
        owner_for(request, profile, owner_state)
        ui = self.ui
        rows = table.to_dict("records") if hasattr(table, "to_dict") else table
        try:
            prices = PriceTable.from_rows(rows)
        except PriceError as e:
            return {ui.price_status: f"⚠️ {e} Nothing changed."}
        return {ui.prices_state: prices.to_rows(), ui.price_table: rows_frame(prices),
                ui.price_status: f"✅ {len(prices)} prices in use for your next comparisons (this session only)."}

    def reset_prices(self, owner_state: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
        owner_for(request, profile, owner_state)
        ui = self.ui
        return {ui.prices_state: None, ui.price_table: rows_frame(self.default_prices),
                ui.price_status: "Prices reset to the app's table."}

    # -- leaderboard and exports ----------------------------------------------------------------

    async def board(self, blind_only: bool, owner_state: str | None, request: gr.Request,
                    profile: gr.OAuthProfile | None = None):
        owner = owner_for(request, profile, owner_state)
        ui = self.ui
        shared = self.s.config.shared_leaderboard
        try:
            records = await self.s.db(repo.comparison_votes, owner=None if shared else owner, blind_only=bool(blind_only))
        except StorageError as e:
            return {ui.board_note: f"⚠️ {e.message}"}
        loop = asyncio.get_running_loop()
        board = await loop.run_in_executor(self.s.executor, build_board, records)
        scope = "everyone's votes" if shared else "your votes"
        note = (f"**{len(records)}** vote{'s' if len(records) != 1 else ''} ({scope}{', blind only' if blind_only else ''}) → "
                f"**{board.total_votes}** pairwise battle{'s' if board.total_votes != 1 else ''} between **{len(board.ratings)}** models. "
                "Bradley–Terry ratings, 95% intervals from 200 bootstrap resamples; ties and all-bad count half a win each.")
        return {ui.board_note: note, ui.board_plot: rating_plot_html(board), ui.board_table: table_frame(board),
                ui.board_matrix: win_matrix_html(board)}

    async def export(self, fmt: str, owner_state: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
        owner = owner_for(request, profile, owner_state)
        ui = self.ui
        try:
            details = await self.s.db(repo.export_comparisons, owner=owner)
        except StorageError as e:
            gr.Warning(e.message)
            return {ui.download: gr.update(visible=False)}
        body = to_jsonl(details) if fmt == "jsonl" else to_csv(details)
        # Short-lived and its owner's only (ui/exports.py), never a lasting copy in Gradio's cache.
        path = exports_for(self.s).write(owner, f"parley-comparisons-{datetime.now(UTC):%Y%m%d-%H%M%S}.{fmt}", body)
        return {ui.download: gr.update(value=str(path), visible=True)}


def tool_calls_of(result: Any) -> list[dict[str, Any]]:
    """A pane's tool calls as the /compare API returns them (none for a reply without tools)."""
    calls = []
    for t in getattr(result, "tools", ()):
        call = t.as_dict()
        call["duration_ms"] = None if t.duration_ms is None else round(t.duration_ms, 1)
        calls.append(call)
    return calls


def rows_frame(prices: PriceTable) -> pd.DataFrame:
    """The price table as the editable frame shows it."""
    return pd.DataFrame(prices.to_rows(), columns=list(ROW_COLUMNS))
