"""The dashboard tab (being built)."""

from __future__ import annotations

import gradio as gr

from ui.context import TabContext


def build_dashboard_tab(ctx: TabContext) -> None:
    gr.Markdown("Not built yet.")
