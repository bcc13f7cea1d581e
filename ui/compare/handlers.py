"""The Compare tab's thin handlers and the /compare API: read the inputs, call core/compare.py, render.

Built with the tab's components (`CompareUI`, ui/compare/components.py) and the `Comparisons` use
case: dependencies go in at construction, and nothing reaches back into the layout.
Blind mode keeps the model names on the server: the pane order and the names live in the
session's gr.State (never sent to the browser) until the vote, and everything rendered before it
is built from "Model A"-style labels, kind-only error texts and no costs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import gradio as gr
import pandas as pd
from pydantic import ValidationError

from chat.context import clean_text
from chat.types import Params
from compare.pricing import ROW_COLUMNS, PriceError, PriceTable
from core.chat import model_label
from core.compare import CompareProblem, Comparisons, ExportFormat, PaneInput
from core.compare_run import LETTERS, CompareRun, Pane, blind_label, metrics_of
from core.identity import owner_for
from core.params import ParamsProblem, params_error, params_from_inputs
from core.services import Services
from storage.errors import StorageError
from storage.models import MAX_PANES, MIN_PANES, ComparisonIds
from ui.compare.board import notes_md, rating_plot_html, style_html, table_frame, win_matrix_html
from ui.compare.components import CompareUI
from ui.compare.view import chart_frames, header_markdown, metrics_markdown, reply_bubbles
from ui.convert import content_text, message_files
from ui.exports import exports_for
from ui.files import in_upload_folder
from ui.repro_card import pane_card_bubble

TEMPERATURE_CHOICES = [("Sidebar's", ""), *[(v, v) for v in ("0", "0.3", "0.7", "1", "1.3", "1.7", "2")]]
VERDICT_TEXT = {"tie": "a tie", "both_bad": "all answers bad"}
STOP_WAIT = 10.0  # seconds the Stop handler waits at most for the cancelled run to save (usually ms)

Update = dict[Any, Any]


def prompt_bubble(prompt: str, files: Any = None) -> dict[str, Any]:
    """A pane's user bubble: the prompt's files (thumbnails and chips, as in the chat), then its text."""
    paths = [f for f in (files or ()) if isinstance(f, str)]
    if not paths:
        return {"role": "user", "content": prompt}
    return {"role": "user", "content": [*({"path": p} for p in paths), *([prompt] if prompt else [])]}


class CompareHandlers:
    """Handlers of the compare tab and the /compare API; every one resolves the owner itself."""

    def __init__(self, comparisons: Comparisons, ui: CompareUI):
        self.comparisons = comparisons
        self.ui = ui

    @property
    def s(self) -> Services:
        return self.comparisons.s

    @property
    def default_prices(self) -> PriceTable:
        return self.comparisons.default_prices

    # -- the API ------------------------------------------------------------------------------

    async def api_compare(
        self,
        message: str | dict[str, Any],
        models: list[str],
        system_prompt: str = "",
        tools: bool = False,
        request: gr.Request = None,  # type: ignore[assignment]  # Gradio fills it in; the default keeps it out of the API's inputs
        profile: gr.OAuthProfile | None = None,
    ) -> list[dict[str, Any]]:
        """Send one prompt to 2-4 models at once; returns per model its text and metrics.

        `message` is the prompt's text, or `{"text": ..., "files": [handle_file("chart.png"), ...]}`:
        every model gets the files; one that cannot read them answers with `error` set, the others run.

        Each item: model, text, ttft_ms, tokens_per_second, output_tokens (reasoning included),
        input_tokens (the whole prompt), reasoning_tokens, cached_input_tokens and cache_write_tokens
        (parts of input_tokens), usage_estimated (true when the provider reported no usage),
        duration_ms, finish_reason, error, cost (USD, null when unpriced), and tools: the tool
        calls the model made (id, name, arguments, result, error, status, duration_ms, step), empty
        unless `tools` is true and the model supports tools (the others answer without). One
        failing model gives an item with `error` set; the others still answer. `position` is the pane
        the model was given; `comparison_id` the saved comparison (for `/judge`; null if not saved).
        """
        owner = owner_for(request, profile, None)
        files = message_files(message)
        if any(not in_upload_folder(f) for f in files):
            raise gr.Error("A file of this prompt is not an upload; attach it again.")
        try:
            return await self.comparisons.compare(owner=owner, request=request, message=content_text(message), models=models,
                                                  system_prompt=system_prompt, tools=bool(tools), files=files)
        except CompareProblem as e:
            raise gr.Error(e.message) from None

    # -- the tab ------------------------------------------------------------------------------

    def read_inputs(self, data: Update) -> tuple[int, list[PaneInput], Params, str]:
        ui = self.ui
        count = int(data[ui.pane_count] or MIN_PANES)
        count = min(max(count, MIN_PANES), MAX_PANES)
        inputs = []
        for i in range(count):
            temp = str(data[ui.temperatures[i]] if data[ui.temperatures[i]] is not None else "").strip()
            try:
                temperature = float(temp) if temp else None
            except ValueError as e:
                raise CompareProblem(f"Pane {i + 1}: the temperature must be a number from 0 to 2, got {temp[:20]!r}.") from e
            inputs.append(PaneInput(ref=(data[ui.models[i]] or "").strip(),
                                    system_prompt=clean_text(data[ui.system_prompts[i]] or "").strip(),
                                    temperature=temperature))  # fmt: skip
        try:
            p = [data[c] for c in ui.ctx.params]
            base = params_from_inputs(*p)
        except (ValidationError, ParamsProblem) as e:
            raise CompareProblem(params_error(e)) from e
        except (TypeError, ValueError) as e:
            raise CompareProblem(f"Invalid parameters: {e}. Nothing was sent.") from e
        return count, inputs, base, clean_text(data[ui.ctx.system_prompt] or "").strip()

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

    def _headers(self, session: dict[str, Any]) -> Update:
        ui = self.ui
        names = self._names(session)
        details = session.get("details") or [""] * len(names)
        out: Update = {}
        for i in range(MAX_PANES):
            if i < len(names):
                name = names[i]
                out[ui.headers[i]] = header_markdown(blind_label(i), name, details[i] if name else "")
                out[ui.pane_columns[i]] = gr.update(visible=True)
            else:
                out[ui.pane_columns[i]] = gr.update(visible=False)
        return out

    async def run(self, data: Update, request: gr.Request, profile: gr.OAuthProfile | None = None) -> AsyncGenerator[Update, None]:
        """Stream one prompt into every pane at once; save the run; offer the vote."""
        ui = self.ui
        owner = owner_for(request, profile, data[ui.ctx.owner])
        session: dict[str, Any] = data[ui.session]
        if not isinstance(session, dict):  # never for a browser session; the state starts as {}
            session = {}
        if session.get("running"):
            yield {ui.status: "⏳ The last prompt is still streaming: wait for it or press Stop."}
            return
        blind = bool(data[ui.blind])
        files = message_files(data[ui.message])
        try:
            if any(not in_upload_folder(f) for f in files):
                raise CompareProblem("A file of this prompt is not an upload; attach it again.")
            text = self.comparisons.check_message(content_text(data[ui.message]))
            _count, inputs, base, system_prompt = self.read_inputs(data)
            panes = self.comparisons.session_panes(session, inputs, base, system_prompt, blind)
            attachments = await self.comparisons.read_files(files, panes)
            await self.comparisons.charge(request, owner, panes, attachments, prompt=text)
        except CompareProblem as e:
            yield {ui.status: f"⚠️ {e.message}"}
            return

        prices = self.comparisons.prices(data[ui.prices_state])
        hidden = bool(session.get("blind") and not session.get("revealed"))
        secret_names = [n for p in panes for n in p.names()] if hidden else []
        run = self.comparisons.start(owner, text, panes, blind=bool(session.get("blind")), prices=prices,
                                     tools=bool(data[ui.tools]), attachments=attachments)
        session.update(running=True, comparison_id=None, voted=False, prompt=text, files=files,
                       names=[model_label(p.info, p.provider.label) for p in panes], refs=[p.ref for p in panes],
                       details=[self._detail(p, run) for p in panes])
        first = {**self._headers(session), ui.message: {"text": "", "files": []}, ui.vote_row: gr.update(visible=False),
                 # In blind mode the settings (which list the models, in another order) fold away.
                 ui.config_accordion: gr.update(open=False) if hidden else gr.skip(),
                 ui.charts: gr.update(visible=False),
                 ui.status: "⏳ Streaming into every pane at once…" + (" Names are hidden until you vote." if hidden else "")}  # fmt: skip
        try:
            async with aclosing(run.stream()) as feed:
                async for _ in feed:
                    update = first | self._pane_values(session, panes, text, prices, secret_names, live=True)
                    first = {}
                    yield update
        finally:
            self._remember(session, run, text, prices, secret_names)
        out = self._after_run(session)
        if any(r.error for r in run.results):
            out[ui.status] += " One or more panes failed: see the notice in the pane."
        yield out

    def _pane_values(self, session: dict[str, Any], panes: list[Pane], prompt: str,
                     prices: PriceTable, secret_names: list[str], *, live: bool) -> Update:
        ui = self.ui
        hidden = bool(secret_names)
        out: Update = {}
        for i, pane in enumerate(panes):
            r = pane.result
            state = session["panes"][i]
            display = state["display"] if secret_names else state["display_full"]
            out[ui.chatbots[i]] = [*display, prompt_bubble(prompt, session.get("files")), *reply_bubbles(r, hide=secret_names)]
            out[ui.metrics[i]] = metrics_markdown(metrics_of(r, prices), live=live and not r.done, show_cost=not hidden)
        return out

    def _remember(self, session: dict[str, Any], run: CompareRun, prompt: str, prices: PriceTable,
                  secret_names: list[str]) -> None:
        """Fold the finished (or stopped) run into the session, in place: Stop gives no chance to return it."""
        for i, pane in enumerate(run.panes):
            r = pane.result
            state = session["panes"][i]
            state["conversation_id"] = pane.conversation_id
            # The files ride along in the server-side history: core sends them again with a follow-up.
            state["history"].append({"role": "user", "content": prompt, "attachments": run.attachments})
            if r.text:
                state["history"].append({"role": "assistant", "content": r.text})
            else:  # keep user/assistant alternating for providers that insist on it
                state["history"].pop()
            turn = [prompt_bubble(prompt, session.get("files"))]
            state["display"] += [*turn, *reply_bubbles(r, hide=secret_names)]
            # What the pane shows once the names are out (provider error messages in full).
            state["display_full"] += [*turn, *reply_bubbles(r), *pane_card_bubble(pane)]
        session["metrics"] = [metrics_of(r, prices) for r in run.results]
        session["comparison_id"] = str(run.ids.comparison_id) if isinstance(run.ids, ComparisonIds) else None
        session["saved"] = bool(run.saved)
        session["running"] = False

    def _after_run(self, session: dict[str, Any]) -> Update:
        """Every pane as saved, the charts, the vote buttons and the status line, after a run or a vote."""
        ui = self.ui
        hidden = bool(session.get("blind") and not session.get("revealed"))
        metrics = session.get("metrics") or []
        count = len(session.get("panes") or [])
        out: Update = self._headers(session)
        for i in range(count):
            pane = session["panes"][i]
            out[ui.chatbots[i]] = pane["display"] if hidden else pane["display_full"]
            if i < len(metrics):
                out[ui.metrics[i]] = metrics_markdown(metrics[i], live=False, show_cost=not hidden)
        frames = chart_frames(LETTERS[: len(metrics)], metrics, show_cost=not hidden)
        for key, plot in ui.plots.items():
            # A chart with nothing to draw (no price for any pane, costs hidden until the vote, no token
            # counts) is hidden with no value: Vega draws an empty frame as an axis of "infinite extent"
            # and warns about it in the browser's console.
            empty = frames[key].empty
            out[plot] = gr.update(value=None if empty else frames[key], visible=not empty)
        out[ui.charts] = gr.update(visible=bool(metrics))
        can_vote = bool(session.get("comparison_id")) and not session.get("voted")
        out.update(self._vote_buttons(count, can_vote))
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

    def _vote_buttons(self, count: int, visible: bool) -> Update:
        ui = self.ui
        out: Update = {ui.vote_row: gr.update(visible=visible)}
        for i, button in enumerate(ui.vote_slot_buttons):
            letter = LETTERS[i]
            label = (f"👈 {letter} is better" if i == 0 else f"👉 {letter} is better") if count == 2 else f"🏆 {letter} is best"
            out[button] = gr.update(visible=i < count, value=label)
        out[ui.vote_bad] = gr.update(value="👎 Both bad" if count == 2 else "👎 All bad")
        return out

    async def stop(self, session: dict[str, Any], owner_state: str | None, request: gr.Request,
                   profile: gr.OAuthProfile | None = None) -> Update:
        """After Stop cancelled the run: wait for its save, then show every pane's kept text."""
        owner_for(request, profile, owner_state)  # only this session's own state is read
        ui = self.ui
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_WAIT
        while isinstance(session, dict) and session.get("running") and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if not isinstance(session, dict) or not session.get("panes") or session.get("running"):
            return {ui.status: "⏹ Stopped."}
        out = self._after_run(session)
        out[ui.status] = "⏹ Stopped. Every pane's text so far is kept and saved." + (
            " You can still vote." if session.get("comparison_id") else "")
        return out

    async def vote(self, choice: str, session: dict[str, Any], owner_state: str | None, request: gr.Request,
                   profile: gr.OAuthProfile | None = None) -> Update:
        """Store the vote for the last run and reveal the names."""
        owner = owner_for(request, profile, owner_state)
        ui = self.ui
        if not isinstance(session, dict) or not session.get("comparison_id") or session.get("voted"):
            return {ui.status: "⚠️ There is no finished comparison to vote on."}
        names = session.get("names") or []
        try:
            verdict, slot = await self.comparisons.vote(owner=owner, comparison_id=session["comparison_id"], choice=choice,
                                                        panes=len(names))
        except CompareProblem as e:
            return {ui.status: f"⚠️ {e.message}"}
        session["voted"] = True
        session["revealed"] = True
        out = self._after_run(session)
        refs = session.get("refs") or [""] * len(names)
        result = f"{blind_label(slot)} wins" if slot is not None else VERDICT_TEXT[verdict]
        reveal = "; ".join(f"{blind_label(i)} was **{n}** (`{r}`)" for i, (n, r) in enumerate(zip(names, refs)))
        out[ui.status] = f"🗳️ Vote saved: {result}. {reveal}."
        return out

    def new_comparison(self, session: dict[str, Any], owner_state: str | None, request: gr.Request,
                       profile: gr.OAuthProfile | None = None) -> Update:
        owner_for(request, profile, owner_state)
        ui = self.ui
        if isinstance(session, dict) and not session.get("running"):
            session.clear()
        out: Update = {ui.session: session, ui.status: "New comparison: the next prompt starts fresh panes.",
                       ui.charts: gr.update(visible=False), ui.vote_row: gr.update(visible=False)}  # fmt: skip
        for i in range(MAX_PANES):
            out[ui.chatbots[i]] = []
            out[ui.metrics[i]] = ""
            out[ui.headers[i]] = header_markdown(f"Pane {i + 1}", None)
        return out

    def show_panes(self, count: Any, blind: bool) -> Update:
        """The pane count and blind mode decide how many settings columns and panes show."""
        ui = self.ui
        n = min(max(int(count or MIN_PANES), MIN_PANES), MAX_PANES)
        out: Update = {}
        for i in range(MAX_PANES):
            out[ui.config_columns[i]] = gr.update(visible=i < n)
            out[ui.pane_columns[i]] = gr.update(visible=i < n)
        return out

    # -- prices -------------------------------------------------------------------------------

    def apply_prices(self, table: Any, owner_state: str | None, request: gr.Request,
                     profile: gr.OAuthProfile | None = None) -> Update:
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

    def reset_prices(self, owner_state: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None) -> Update:
        owner_for(request, profile, owner_state)
        ui = self.ui
        return {ui.prices_state: None, ui.price_table: rows_frame(self.default_prices),
                ui.price_status: "Prices reset to the app's table."}

    # -- leaderboard and exports ----------------------------------------------------------------

    async def board(self, blind_only: bool, style: bool, pair_a: str | None, pair_b: str | None, owner_state: str | None,
                    request: gr.Request, profile: gr.OAuthProfile | None = None) -> Update:
        owner = owner_for(request, profile, owner_state)
        ui = self.ui
        chosen = (pair_a, pair_b) if pair_a and pair_b and pair_a != pair_b else None
        try:
            standings = await self.comparisons.standings(owner=owner, blind_only=bool(blind_only), style=bool(style),
                                                         pair=chosen)
        except StorageError as e:
            return {ui.board_note: f"⚠️ {e.message}"}
        board, votes = standings.board, standings.votes
        scope = "everyone's votes" if standings.shared else "your votes"
        note = (f"**{votes}** vote{'s' if votes != 1 else ''} ({scope}{', blind only' if blind_only else ''}) → "
                f"**{board.total_votes}** pairwise battle{'s' if board.total_votes != 1 else ''} between **{len(board.ratings)}** models. "
                "Bradley–Terry ratings with a pane-position term, 95% intervals from 200 bootstrap resamples; ties and "
                "all-bad count half a win each; ranks overlap (\"1–3\") where the intervals do.")
        extra = notes_md(standings.result)
        if pair_a and pair_b and pair_a == pair_b:
            extra += "\n\nPick two different models to see how many votes would separate them."
        models = [r.model for r in board.ratings]
        # The pickers offer the rated models; a pick that is no longer rated (blind-only switched on) is cleared.
        return {ui.board_note: note + ("\n\n" + extra.strip() if extra.strip() else ""),
                ui.board_plot: rating_plot_html(board, standings.result.ranks) + style_html(standings.result),
                ui.board_table: table_frame(board, standings.result.ranks), ui.board_matrix: win_matrix_html(board),
                ui.pair_a: gr.update(choices=models, value=pair_a if pair_a in models else None),
                ui.pair_b: gr.update(choices=models, value=pair_b if pair_b in models else None)}

    async def api_leaderboard(self, blind_only: bool = False, style: bool = True, pair: list[str] | None = None,
                              request: gr.Request = None,  # type: ignore[assignment]  # Gradio fills it in
                              profile: gr.OAuthProfile | None = None) -> dict[str, Any]:
        """The leaderboard over your votes (everyone's with SHARED_LEADERBOARD).

        Returns battles; ratings (rank as a range such as "1–3" where intervals overlap, model, rating with
        a pane-position term, ci, votes, win_rate, and with `style` the style-controlled style_rating,
        style_ci, style_rank); position_bias (pane_a_share with its 95% ci over decisive_battles, and the
        fitted log-odds coefficient); style_coefficients; top_pair and `pair` (two models you name): the
        expected win rate, votes_needed to separate them (5% two-sided, 80% power), decisive_votes so far
        and more_votes; flips_to_change_first.
        """
        owner = owner_for(request, profile, None)
        chosen: tuple[str, str] | None = None
        if pair:
            if not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(m, str) and m for m in pair):
                raise gr.Error("`pair` must be two model names (provider:model).")
            chosen = (pair[0], pair[1])
        try:
            standings = await self.comparisons.standings(owner=owner, blind_only=bool(blind_only), style=bool(style),
                                                         pair=chosen)
        except StorageError as e:
            raise gr.Error(e.message) from e
        return {"votes": standings.votes, "shared": standings.shared, **standings.result.as_dict()}

    async def export(self, fmt: ExportFormat, owner_state: str | None, request: gr.Request,
                     profile: gr.OAuthProfile | None = None) -> Update:
        owner = owner_for(request, profile, owner_state)
        ui = self.ui
        try:
            name, body = await self.comparisons.export(owner=owner, fmt=fmt)
        except StorageError as e:
            gr.Warning(e.message)
            return {ui.download: gr.update(visible=False)}
        # Short-lived and its owner's only (ui/exports.py), never a lasting copy in Gradio's cache.
        path = exports_for(self.s).write(owner, name, body)
        return {ui.download: gr.update(value=str(path), visible=True)}


def rows_frame(prices: PriceTable) -> pd.DataFrame:
    """The price table as the editable frame shows it."""
    return pd.DataFrame(prices.to_rows(), columns=list(ROW_COLUMNS))
