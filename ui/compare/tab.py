"""The compare tab: one prompt into 2-4 panes at once, live metrics, blind votes, leaderboard, exports.

This module is the layout and the event wiring: it builds the components into a `CompareUI`
(ui/compare/components.py), then the handlers (ui/compare/handlers.py) from it and the `Comparisons`
use case (core/compare.py, which runs core/compare_run.py and writes core/compare_export.py's
exports). The rendering is ui/compare/view.py, the leaderboard's ui/compare/board.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
from gradio.events import api

from compare.pricing import ROW_COLUMNS, PriceTable
from core.compare import Comparisons, ExportFormat
from core.compare_run import LETTERS
from storage.models import MAX_PANES, MIN_PANES
from ui.chatbox import chat_box
from ui.compare.components import CompareUI
from ui.compare.handlers import TEMPERATURE_CHOICES, CompareHandlers, rows_frame
from ui.compare.judges import build_judges_board, build_judges_panel, wire_judges
from ui.compare.view import CHART_METRICS, header_markdown
from ui.context import TabContext
from ui.share_panel import build_compare_share

METRICS_CSS = """
.cmp-metrics { display: flex; flex-wrap: wrap; gap: 6px; margin: 2px 0 4px; }
.cmp-metric { display: flex; flex-direction: column; padding: 3px 7px; border-radius: 8px;
  background: var(--background-fill-secondary); border: 1px solid var(--border-color-primary); }
.cmp-metric small { font-size: 10px; opacity: .7; text-transform: uppercase; letter-spacing: .03em; white-space: nowrap; }
.cmp-metric b { font-size: 13px; font-variant-numeric: tabular-nums; white-space: nowrap; }
"""
BOARD_CSS = """
.cmp-plot { margin: 6px 0 14px; }
.cmp-plot-title { font-weight: 600; margin-bottom: 6px; }
.parley-muted { opacity: .7; font-weight: 400; font-size: .9em; }
.cmp-empty { padding: 24px; text-align: center; opacity: .7; border: 1px dashed var(--border-color-primary); border-radius: 10px; }
svg.cmp-forest { max-width: 900px; font-family: var(--font); }
svg.cmp-forest .grid { stroke: var(--border-color-primary); stroke-width: 1; }
svg.cmp-forest .mean { stroke: var(--body-text-color-subdued); stroke-dasharray: 4 3; }
svg.cmp-forest .tick { font-size: 11px; text-anchor: middle; fill: var(--body-text-color-subdued); }
svg.cmp-forest .name { font-size: 13px; text-anchor: end; fill: var(--body-text-color); }
svg.cmp-forest .val { font-size: 12px; fill: var(--body-text-color-subdued); }
svg.cmp-forest .ci { stroke: var(--color-accent); stroke-width: 2.5; }
svg.cmp-forest .dot { fill: var(--color-accent); stroke: var(--background-fill-primary); stroke-width: 2; }
table.cmp-matrix { border-collapse: separate; border-spacing: 3px; font-variant-numeric: tabular-nums; border: none; }
table.cmp-matrix th, table.cmp-matrix td { border: none; background: none; }
table.cmp-matrix th { font-size: 12px; font-weight: 600; padding: 4px 8px; text-align: right; white-space: nowrap; }
table.cmp-matrix tr:first-child th { text-align: center; }
table.cmp-matrix td { min-width: 72px; height: 38px; text-align: center; border-radius: 6px; font-weight: 600; }
table.cmp-matrix td small { display: block; font-size: 10px; font-weight: 400; opacity: .7; }
table.cmp-matrix td.na { opacity: .35; background: var(--background-fill-secondary); }
.cmp-scroll { overflow-x: auto; max-width: 100%; }
table.cmp-style { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.cmp-style th, table.cmp-style td { padding: 4px 10px; text-align: right; white-space: nowrap; }
table.cmp-style td:nth-child(2), table.cmp-style th:nth-child(2) { text-align: left; }
"""
@dataclass
class CompareTab(CompareUI):
    """The built tab: its components, and the handlers behind them (tests call them directly)."""

    handlers: CompareHandlers


def _default_models(ctx: TabContext) -> list[str]:
    values = [v for _, v in ctx.model_choices]
    distinct = list(dict.fromkeys(values))
    if not distinct:
        return [""] * MAX_PANES
    return [distinct[i % len(distinct)] for i in range(MAX_PANES)]


def _tools_checkbox(ctx: TabContext) -> gr.Checkbox:
    """The tools switch; hidden when the deployment offers no tools (its tools module failed to load)."""
    toolbox = ctx.services.toolbox
    names = ", ".join(toolbox.names) if toolbox is not None else ""
    return gr.Checkbox(label="🛠 Tools", value=False, scale=2, elem_id="cmp-tools", visible=toolbox is not None,
                       info=f"Models that support tools may call them ({names}); the others answer without")


def build_compare_tab(ctx: TabContext) -> CompareUI:
    """The compare tab's layout and events, plus the /compare API (this runs inside the app's gr.Blocks)."""
    prices = PriceTable.from_env()
    defaults = _default_models(ctx)
    session = gr.State({})  # the last run (server-side): made first, the Share button below reads it
    with gr.Tabs(elem_id="compare-tabs"):
        with gr.Tab("⚖️ Arena", id="arena", elem_id="compare-arena"):
            with gr.Row(equal_height=False, elem_id="cmp-controls"):
                pane_count = gr.Radio([2, 3, 4], value=2, label="Panes", scale=1, min_width=180, elem_id="cmp-count")
                blind = gr.Checkbox(label="🙈 Blind mode", value=False, scale=2, elem_id="cmp-blind",
                                    info="Hide the names and shuffle the panes until you vote")
                tools = _tools_checkbox(ctx)
                with gr.Column(scale=1, min_width=180):
                    new = gr.Button("➕ New comparison", size="md", elem_id="cmp-new")
            with gr.Accordion("Models and settings per pane", open=True, elem_id="cmp-config") as config_accordion:
                gr.Markdown("Empty fields use the sidebar's system prompt and parameters. Same model twice with "
                            "another temperature or system prompt makes a parameter sweep.", elem_classes=["parley-muted"])
                models, system_prompts, temperatures, config_columns = [], [], [], []
                with gr.Row():
                    for i in range(MAX_PANES):
                        with gr.Column(visible=i < MIN_PANES, min_width=220) as col:
                            models.append(gr.Dropdown(choices=ctx.model_choices, value=defaults[i], allow_custom_value=True,
                                                      label=f"Pane {i + 1} model", elem_id=f"cmp-model-{i}"))
                            system_prompts.append(gr.Textbox(label="System prompt", lines=1, max_lines=4,
                                                             placeholder="Sidebar's", elem_id=f"cmp-system-{i}"))
                            # A dropdown, not a Number: an empty Number arrives as 0, and empty means "the sidebar's".
                            temperatures.append(gr.Dropdown(choices=TEMPERATURE_CHOICES, value="", allow_custom_value=True,
                                                            label="Temperature", elem_id=f"cmp-temp-{i}"))
                        config_columns.append(col)
            with gr.Row(equal_height=True):
                message = chat_box(placeholder="One prompt, sent to every pane at once… (📎 files go to every pane)",
                                   show_label=False, lines=1, max_lines=8, scale=8, elem_id="cmp-msg", autofocus=False,
                                   submit_btn=False)  # the Send button beside it sends
                send = gr.Button("Send", variant="primary", scale=1, min_width=90, elem_id="cmp-send")
                stop = gr.Button("⏹ Stop", variant="stop", scale=1, min_width=90, elem_id="cmp-stop")
            status = gr.Markdown("", elem_id="cmp-status")
            pane_columns, headers, chatbots, metrics = [], [], [], []
            with gr.Row(equal_height=False):
                for i in range(MAX_PANES):
                    with gr.Column(visible=i < MIN_PANES, min_width=260, elem_id=f"cmp-pane-{i}") as col:
                        headers.append(gr.Markdown(header_markdown(f"Pane {i + 1}", None), elem_id=f"cmp-header-{i}"))
                        chatbots.append(gr.Chatbot(height=330, show_label=False, elem_id=f"cmp-chat-{i}", buttons=["copy"],
                                                   placeholder="Replies stream here.", layout="bubble"))
                        metrics.append(gr.HTML("", css_template=METRICS_CSS, js_on_load=None, elem_id=f"cmp-metrics-{i}"))
                    pane_columns.append(col)
            with gr.Row(visible=False, elem_id="cmp-vote") as vote_row:
                vote_slot_buttons = [gr.Button(f"🏆 {LETTERS[i]} is best", visible=i < 2, elem_id=f"cmp-vote-{i}")
                                     for i in range(MAX_PANES)]  # fmt: skip
                vote_tie = gr.Button("🤝 Tie", elem_id="cmp-vote-tie")
                vote_bad = gr.Button("👎 Both bad", elem_id="cmp-vote-bad")
            build_compare_share(ctx.services, session, ctx.owner)
            judges_panel = build_judges_panel(ctx)
            with gr.Row(visible=False, elem_id="cmp-charts") as charts:
                plots = {key: gr.BarPlot(x="Model", y=unit, color="Model", title=title, height=220, show_label=False,
                                         y_lim=[0, None], sort="x", x_label_angle=0, min_width=160,
                                         elem_id=f"cmp-plot-{key}")
                         for key, title, unit in CHART_METRICS}  # fmt: skip
            with gr.Accordion("💲 Prices (USD per million tokens)", open=False, elem_id="cmp-prices"):
                gr.Markdown("Edit, add or delete rows, then Apply; it affects your session only. `*` is a wildcard "
                            "(`ollama:*`). Costs stay hidden in blind mode until the vote.", elem_classes=["parley-muted"])
                price_table = gr.Dataframe(value=rows_frame(prices), headers=list(ROW_COLUMNS), interactive=True,
                                           datatype=["str", "number", "number", "str", "number", "number"],
                                           # Gradio 6.31 still hands (count, "fixed") to the page as is: no column can be added.
                                           column_count=(len(ROW_COLUMNS), "fixed"),  # type: ignore[arg-type]  # typed int only since 6.0
                                           max_height=320, elem_id="cmp-price-table")
                with gr.Row():
                    apply_prices = gr.Button("Apply prices", size="sm", variant="primary")
                    reset_prices = gr.Button("Reset", size="sm")
                price_status = gr.Markdown("" if not prices.problems else "⚠️ " + " ".join(prices.problems))
        with gr.Tab("🏆 Leaderboard", id="leaderboard", elem_id="compare-board") as board_tab:
            with gr.Row(equal_height=True):
                blind_only = gr.Checkbox(label="Blind votes only", value=False, scale=3)
                style_control = gr.Checkbox(label="Style control (length, headers, lists, bold held equal)", value=False,
                                            scale=3, elem_id="cmp-board-style")
                refresh = gr.Button("↻ Refresh", size="sm", scale=1, elem_id="cmp-board-refresh")
            board_note = gr.Markdown("", elem_id="cmp-board-note")
            with gr.Row(equal_height=True):
                # Any two rated models: how many more votes would separate them (the top pair is always in the note).
                pair_a = gr.Dropdown(choices=[], value=None, label="Pick a pair: first model", scale=1, elem_id="cmp-pair-a")
                pair_b = gr.Dropdown(choices=[], value=None, label="second model", scale=1, elem_id="cmp-pair-b")
            board_plot = gr.HTML("", css_template=BOARD_CSS, js_on_load=None, elem_id="cmp-board-plot")
            board_table = gr.Dataframe(headers=["rank", "model", "rating", "95% CI", "votes", "win rate"], interactive=False,
                                       elem_id="cmp-board-table")
            board_matrix = gr.HTML("", css_template=BOARD_CSS, js_on_load=None, elem_id="cmp-board-matrix")
            judges_board = build_judges_board()
            with gr.Accordion("⬇️ Export comparisons and votes", open=False):
                gr.Markdown("Your comparisons, every pane's reply and metrics, and your votes. JSONL: one comparison "
                            "a line; CSV: one pane a row; the experiment file (compare/README.md) opens in the Batch tab.", elem_classes=["parley-muted"])
                with gr.Row():
                    export_jsonl = gr.Button("Export JSONL", size="sm", elem_id="cmp-export-jsonl")
                    export_csv = gr.Button("Export CSV", size="sm", elem_id="cmp-export-csv")
                    export_experiment = gr.Button("Export experiment file", size="sm", elem_id="cmp-export-experiment")
                download = gr.File(label="Download", visible=False, interactive=False, elem_id="cmp-download")

    prices_state = gr.State(None)
    ui = CompareUI(
        ctx=ctx, pane_count=pane_count, blind=blind, tools=tools, models=models, system_prompts=system_prompts,
        temperatures=temperatures, config_columns=config_columns, config_accordion=config_accordion, message=message, status=status,
        pane_columns=pane_columns, headers=headers, chatbots=chatbots, metrics=metrics, charts=charts, plots=plots,
        vote_row=vote_row, vote_slot_buttons=vote_slot_buttons, vote_tie=vote_tie, vote_bad=vote_bad,
        session=session, prices_state=prices_state, price_table=price_table, price_status=price_status,
        board_note=board_note, board_plot=board_plot, board_table=board_table, board_matrix=board_matrix,
        pair_a=pair_a, pair_b=pair_b,
        download=download,
    )  # fmt: skip
    handlers = CompareHandlers(Comparisons(ctx.services, prices), ui)
    _wire(handlers, ui, _Controls(send, stop, new, apply_prices, reset_prices, board_tab, blind_only, refresh, export_jsonl,
                                  export_csv, style_control, export_experiment))
    wire_judges(ctx, session, judges_panel, judges_board, board_tab, refresh)  # ui/compare/judges.py
    return CompareTab(**vars(ui), handlers=handlers)


@dataclass
class _Controls:
    """The buttons and switches that only trigger events (no handler reads them)."""

    send: gr.Button
    stop: gr.Button
    new: gr.Button
    apply_prices: gr.Button
    reset_prices: gr.Button
    board_tab: gr.Tab
    blind_only: gr.Checkbox
    refresh: gr.Button
    export_jsonl: gr.Button
    export_csv: gr.Button
    style_control: gr.Checkbox
    export_experiment: gr.Button | None = None


def _vote_fn(tab: CompareHandlers, choice: str) -> Callable[..., Awaitable[dict[Any, Any]]]:
    async def vote(session: dict[str, Any], owner_state: str | None, request: gr.Request,
                   profile: gr.OAuthProfile | None = None) -> dict[Any, Any]:
        return await tab.vote(choice, session, owner_state, request, profile)

    return vote


def _export_fn(tab: CompareHandlers, fmt: ExportFormat) -> Callable[..., Awaitable[dict[Any, Any]]]:
    async def export(owner_state: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None) -> dict[Any, Any]:
        return await tab.export(fmt, owner_state, request, profile)

    return export


def _wire(tab: CompareHandlers, ui: CompareUI, c: _Controls) -> None:
    ctx = ui.ctx
    send, stop, new, apply_prices, reset_prices = c.send, c.stop, c.new, c.apply_prices, c.reset_prices
    board_tab, blind_only, refresh, export_jsonl, export_csv = c.board_tab, c.blind_only, c.refresh, c.export_jsonl, c.export_csv
    style_control = c.style_control
    private: dict[str, Any] = {"api_visibility": "private"}
    run_inputs = {ui.message, ui.pane_count, ui.blind, ui.tools, *ui.models, *ui.system_prompts, *ui.temperatures,
                  ctx.system_prompt, *ctx.params, ui.session, ui.prices_state, ctx.owner}  # fmt: skip
    pane_outputs = [*ui.headers, *ui.chatbots, *ui.metrics, *ui.pane_columns]
    vote_outputs = [ui.vote_row, *ui.vote_slot_buttons, ui.vote_tie, ui.vote_bad]
    run_outputs = [*pane_outputs, *vote_outputs, ui.charts, *ui.plots.values(), ui.status, ui.message, ui.session,
                   ui.config_accordion]
    board_outputs = [ui.board_note, ui.board_plot, ui.board_table, ui.board_matrix, ui.pair_a, ui.pair_b]
    board_inputs = [blind_only, style_control, ui.pair_a, ui.pair_b, ctx.owner]

    runs: list[dict[str, Any]] = [  # Gradio's Dependency is a dict; `cancels` is typed as dicts
        trigger(tab.run, run_inputs, run_outputs, show_progress="hidden", concurrency_limit=None, **private)
        for trigger in (ui.message.submit, send.click)
    ]
    # Cancelling happens when the click's own (empty) event ends; only then can the cancelled run
    # save, and the follow-up shows every pane as saved.
    stop.click(None, None, None, cancels=runs, **private).then(
        tab.stop, [ui.session, ctx.owner], run_outputs, show_progress="hidden", **private)
    new.click(tab.new_comparison, [ui.session, ctx.owner], run_outputs, **private)
    for chatbot in ui.chatbots:  # a pane's 🗑 button starts over, as "New comparison" does
        chatbot.clear(tab.new_comparison, [ui.session, ctx.owner], run_outputs, **private)
    ui.pane_count.change(tab.show_panes, [ui.pane_count, ui.blind], [*ui.config_columns, *ui.pane_columns], **private)
    for i, button in enumerate(ui.vote_slot_buttons):
        button.click(_vote_fn(tab, str(i)), [ui.session, ctx.owner], run_outputs, **private).then(
            tab.board, board_inputs, board_outputs, **private)
    for button, choice in ((ui.vote_tie, "tie"), (ui.vote_bad, "both_bad")):
        button.click(_vote_fn(tab, choice), [ui.session, ctx.owner], run_outputs, **private).then(
            tab.board, board_inputs, board_outputs, **private)
    apply_prices.click(tab.apply_prices, [ui.price_table, ctx.owner], [ui.prices_state, ui.price_table, ui.price_status], **private)
    reset_prices.click(tab.reset_prices, [ctx.owner], [ui.prices_state, ui.price_table, ui.price_status], **private)
    board_tab.select(tab.board, board_inputs, board_outputs, **private)
    refresh.click(tab.board, board_inputs, board_outputs, **private)
    blind_only.change(tab.board, board_inputs, board_outputs, **private)
    style_control.change(tab.board, board_inputs, board_outputs, **private)
    for picker in (ui.pair_a, ui.pair_b):  # .input: the user's choice only, not the choices the board refreshes
        picker.input(tab.board, board_inputs, board_outputs, **private)
    export_jsonl.click(_export_fn(tab, "jsonl"), [ctx.owner], [ui.download], **private)
    export_csv.click(_export_fn(tab, "csv"), [ctx.owner], [ui.download], **private)
    if c.export_experiment is not None:
        c.export_experiment.click(_export_fn(tab, "experiment"), [ctx.owner], [ui.download], **private)
    api(tab.api_compare, api_name="compare", concurrency_limit=None)
    api(tab.api_leaderboard, api_name="leaderboard")
