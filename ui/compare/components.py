"""Named handles on the Compare tab's components: the layout (tab.py) fills them, the handlers read them."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ui.context import TabContext


@dataclass
class CompareUI:
    """The tab's components by name (tests and handlers use these, never positions)."""

    ctx: TabContext
    pane_count: gr.Radio
    blind: gr.Checkbox
    tools: gr.Checkbox
    models: list[gr.Dropdown]
    system_prompts: list[gr.Textbox]
    temperatures: list[gr.Dropdown]
    config_columns: list[gr.Column]
    config_accordion: gr.Accordion
    message: gr.MultimodalTextbox
    status: gr.Markdown
    pane_columns: list[gr.Column]
    headers: list[gr.Markdown]
    chatbots: list[gr.Chatbot]
    metrics: list[gr.HTML]
    charts: gr.Row
    plots: dict[str, gr.BarPlot]
    vote_row: gr.Row
    vote_slot_buttons: list[gr.Button]
    vote_tie: gr.Button
    vote_bad: gr.Button
    session: gr.State
    prices_state: gr.State
    price_table: gr.Dataframe
    price_status: gr.Markdown
    board_note: gr.Markdown
    board_plot: gr.HTML
    board_table: gr.Dataframe
    board_matrix: gr.HTML
    #: Two models the user picks on the leaderboard: votes to separate them (the top pair is always shown).
    pair_a: gr.Dropdown
    pair_b: gr.Dropdown
    download: gr.File
