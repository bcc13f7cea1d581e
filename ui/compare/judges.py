"""The Compare tab's judges: the "Judges" accordion under a comparison, the Leaderboard's judges section,
and the `/judge` and `/judge_board` APIs. Thin: the rules are core/judges.py's.

Blind secrecy: the accordion reads the comparison from the tab's server-side session; before a blind
comparison's vote the verdicts are shown by pane ("Model A"), as core gives them.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd
from gradio.events import api

from compare.judging import DEFAULT_PAIR_TEMPLATE, FLAG_AGREEMENT, FLAG_CONSISTENCY, FLAG_KAPPA, FLAG_MIN_N
from compare.pricing import PriceTable
from core.identity import owner_for
from core.judges import MAX_JUDGES, ComparisonJudging, JudgeProblem, Judges
from storage.errors import StorageError
from ui.compare.board import table_frame
from ui.context import TabContext

Update = dict[Any, Any]
AGREEMENT_COLUMNS = ["judge", "agreement", "kappa", "n", "consistency", "verdicts", "no verdict", "flag"]
ORDER_TEXT = {"1": "answer 1", "2": "answer 2", "tie": "tie", None: "no verdict"}


@dataclass
class JudgesPanel:
    """The accordion under a comparison: judges, the editable prompt, Ask, and the verdicts."""

    judges: gr.Dropdown
    template: gr.Textbox
    ask: gr.Button
    result: gr.Markdown


@dataclass
class JudgesBoard:
    """The Leaderboard's judges section: each judge's own ranking and the agreement table."""

    note: gr.Markdown
    boards: gr.HTML
    agreement: gr.Dataframe


def _money(cost: float | None) -> str:
    return "unpriced" if cost is None else f"${cost:.4f}"


def _esc(text: str) -> str:
    return html.escape(text or "", quote=False).replace("|", "\\|").replace("\n", " ")


def verdicts_markdown(result: ComparisonJudging) -> str:
    """The verdicts of one judging, one line each (a list wraps on a phone where a 7-column table cannot)."""
    lines = []
    for v in result.verdicts:
        pair = f"{v['pane_a']} vs {v['pane_b']}"
        if v["model_a"] and v["model_b"]:
            pair += f" ({_esc(v['model_a'])} vs {_esc(v['model_b'])})"
        # In the first order the lower pane is answer 1; in the second it is answer 2.
        first = {"1": v["pane_a"], "2": v["pane_b"]}.get(v["verdict_ab"] or "", ORDER_TEXT.get(v["verdict_ab"], "?"))
        second = {"1": v["pane_b"], "2": v["pane_a"]}.get(v["verdict_ba"] or "", ORDER_TEXT.get(v["verdict_ba"], "?"))
        winner = f"**{v['winner']} wins**" if v["final"] in ("a", "b") else f"**{v['winner']}**"
        same = {True: "✅ same in both orders", False: "⚠️ flips with the order, so a tie", None: "not read in both orders"}
        lines.append(f"- **{_esc(v['judge'])}** · {pair} → {winner}: {same[v['consistent']]} "
                     f"({v['pane_a']} shown first: {first}; {v['pane_b']} first: {second}) · {_money(v['cost'])}")
    errors = sorted({v["error"] for v in result.verdicts if v["error"]})
    head = (f"⚖️ {result.calls} judge call{'s' if result.calls != 1 else ''}, total cost {_money(result.cost)}."
            + (" Names stay hidden until you vote." if result.hidden else ""))
    raw = "".join(f"<details><summary>{html.escape(v['judge'])}: {v['pane_a']} vs {v['pane_b']}, what the judge wrote"
                  f"</summary>\n\n**{v['pane_a']} first:** {_esc(v['raw_ab'])}\n\n**{v['pane_b']} first:** "
                  f"{_esc(v['raw_ba'])}\n\n</details>\n" for v in result.verdicts)
    tail = ("\n\n⚠️ " + " ".join(_esc(e) for e in errors)) if errors else ""
    return head + "\n\n" + "\n".join(lines) + "\n\n" + raw + tail


def agreement_frame(audits: list[dict[str, Any]]) -> pd.DataFrame:
    def pct(x: float | None) -> str:
        return "–" if x is None else f"{x:.0%}"

    rows = [{"judge": a["judge"], "agreement": pct(a["agreement"]),
             "kappa": "–" if a["kappa"] is None else f"{a['kappa']:.2f}", "n": a["n"],
             "consistency": pct(a["consistency"]), "verdicts": a["verdicts"], "no verdict": a["unparsed"],
             "flag": "⚠️ " + "; ".join(a["reasons"]) if a["flagged"] else ""} for a in audits]  # fmt: skip
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


class JudgeHandlers:
    """Handlers of the judges accordion, the judges section and the two APIs; each resolves the owner itself."""

    def __init__(self, judges: Judges, panel: JudgesPanel | None = None, board: JudgesBoard | None = None):
        self.judges = judges
        self.panel = panel
        self.board_ui = board

    async def ask(self, judges: list[str] | None, template: str, session: dict[str, Any], owner_state: str | None,
                  request: gr.Request, profile: gr.OAuthProfile | None = None) -> Update:
        owner = owner_for(request, profile, owner_state)
        assert self.panel is not None
        cid = session.get("comparison_id") if isinstance(session, dict) else None
        if not cid:
            return {self.panel.result: "⚠️ Run a comparison first: the judges grade its saved answers."}
        if session.get("running"):
            return {self.panel.result: "⚠️ Wait for the comparison to finish."}
        try:
            result = await self.judges.judge_comparison(owner=owner, request=request, comparison_id=cid, judges=judges or [],
                                                        template=template)
        except JudgeProblem as e:
            return {self.panel.result: f"⚠️ {e.message}"}
        return {self.panel.result: verdicts_markdown(result)}

    async def board(self, owner_state: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None) -> Update:
        owner = owner_for(request, profile, owner_state)
        ui = self.board_ui
        assert ui is not None
        try:
            board = await self.judges.board(owner=owner)
        except StorageError as e:
            return {ui.note: f"⚠️ {e.message}"}
        if not board.boards:
            return {ui.note: "No judge verdicts yet: open **⚖️ Judges** under a comparison and ask one.",
                    ui.boards: "", ui.agreement: agreement_frame([])}
        parts = []
        for judge, (lb, ranks) in board.boards.items():
            table = table_frame(lb, ranks).rename(columns={"votes": "verdicts"}).to_html(index=False, border=0,
                                                                                         classes="cmp-style")
            n = lb.total_votes
            # Scrolls sideways on a phone rather than squeezing the columns.
            parts.append(f"<h4>{html.escape(judge)} <span class='parley-muted'>{n} verdict{'s' if n != 1 else ''}, cost "
                         f"{html.escape(_money(board.costs.get(judge)))}</span></h4>"
                         f"<div style='overflow-x:auto;max-width:100%'>{table}</div>")
        note = ("Each judge's own Bradley–Terry ranking over its verdicts (both orders asked; a verdict that flips with "
                "the order is a tie), never mixed with your votes. Agreement and Cohen's kappa compare each judge with "
                f"your votes on the same comparisons; flagged with n ≥ {FLAG_MIN_N} and kappa < {FLAG_KAPPA} or agreement "
                f"< {FLAG_AGREEMENT:.0%}, or consistency < {FLAG_CONSISTENCY:.0%}.")
        return {ui.note: note, ui.boards: "".join(parts), ui.agreement: agreement_frame(board.audits)}

    async def api_judge(self, comparison_id: str, judges: list[str], prompt: str = "",
                        request: gr.Request = None,  # type: ignore[assignment]  # Gradio fills it in
                        profile: gr.OAuthProfile | None = None) -> dict[str, Any]:
        """Ask 1-4 judge models about a comparison of yours (the `comparison_id` that /compare returns).

        Each judge grades every pair of answers in both orders without model names; a verdict that flips with
        the order is a tie. `prompt`: your judge prompt with {question}, {answer_1} and {answer_2} (empty: the
        default). Every judge call counts against the rate limit, all charged first. Returns comparison_id,
        names_hidden (a blind comparison before its vote), calls, cost (USD, null when unpriced) and verdicts:
        judge, pane_a, pane_b, model_a, model_b, verdict_ab ("1", "2", "tie" or null: pane_a's answer shown
        first), verdict_ba (pane_b's first), final ("a", "b", "tie", "none"), winner, consistent, cost, error,
        raw_ab, raw_ba, template_hash.
        """
        owner = owner_for(request, profile, None)
        try:
            result = await self.judges.judge_comparison(owner=owner, request=request, comparison_id=comparison_id,
                                                        judges=judges, template=prompt)
        except JudgeProblem as e:
            raise gr.Error(e.message) from None
        return result.as_dict()

    async def api_judge_board(self, request: gr.Request = None,  # type: ignore[assignment]  # Gradio fills it in
                              profile: gr.OAuthProfile | None = None) -> dict[str, Any]:
        """Each judge's own ranking over its verdicts on your comparisons, and its agreement with your votes.

        Returns judges: {judge: {battles, cost, ratings: [{rank, model, rating, ci, verdicts, win_rate}]}} and
        agreement: [{judge, verdicts, unparsed, consistency, both_orders, n, agreement, kappa, flagged, reasons}].
        """
        owner = owner_for(request, profile, None)
        try:
            board = await self.judges.board(owner=owner)
        except StorageError as e:
            raise gr.Error(e.message) from e
        return board.as_dict()


def build_judges_panel(ctx: TabContext) -> JudgesPanel:
    """The "Judges" accordion (inside the Arena tab, under the vote buttons)."""
    with gr.Accordion("⚖️ Judges", open=False, elem_id="cmp-judges"):
        gr.Markdown("LLM judges grade this comparison's answers without seeing model names, in both orders; a verdict "
                    "that flips with the order counts as a tie. Each judge call counts against your rate limit. "
                    "Verdicts are stored apart from your votes.", elem_classes=["parley-muted"])
        judges = gr.Dropdown(choices=ctx.model_choices, value=[], multiselect=True, max_choices=MAX_JUDGES,
                             allow_custom_value=True, label=f"Judge models (up to {MAX_JUDGES})", elem_id="cmp-judges-models")
        template = gr.Textbox(value=DEFAULT_PAIR_TEMPLATE, lines=6, max_lines=16, label="Judge prompt",
                              info="Keep {question}, {answer_1} and {answer_2}; the verdict line is [[1]], [[2]] or [[tie]]",
                              elem_id="cmp-judges-prompt")
        ask = gr.Button("Ask judges", variant="primary", size="sm", elem_id="cmp-judges-ask")
        result = gr.Markdown("", elem_id="cmp-judges-result")
    return JudgesPanel(judges, template, ask, result)


def build_judges_board() -> JudgesBoard:
    """The Leaderboard's judges section (inside the Leaderboard tab)."""
    with gr.Accordion("⚖️ Judges", open=True, elem_id="cmp-judges-board"):
        note = gr.Markdown("", elem_id="cmp-judges-note")
        boards = gr.HTML("", elem_id="cmp-judges-boards")
        agreement = gr.Dataframe(headers=AGREEMENT_COLUMNS, interactive=False, elem_id="cmp-judges-agreement")
    return JudgesBoard(note, boards, agreement)


def wire_judges(ctx: TabContext, session: gr.State, panel: JudgesPanel, board: JudgesBoard, board_tab: gr.Tab,
                refresh: gr.Button) -> JudgeHandlers:
    """The events and the /judge and /judge_board APIs (call inside the app's Blocks)."""
    handlers = JudgeHandlers(Judges(ctx.services, PriceTable.from_env()), panel, board)
    private: dict[str, Any] = {"api_visibility": "private"}
    panel.ask.click(handlers.ask, [panel.judges, panel.template, session, ctx.owner], [panel.result], **private)
    for trigger in (board_tab.select, refresh.click):
        trigger(handlers.board, [ctx.owner], [board.note, board.boards, board.agreement], **private)
    api(handlers.api_judge, api_name="judge", concurrency_limit=None)
    api(handlers.api_judge_board, api_name="judge_board")
    return handlers
