"""The dashboard tab: per provider and model, this user's replies, tokens, cost, latency and errors."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import gradio as gr
import pandas as pd

from compare.pricing import PriceTable
from core.identity import owner_for
from core.services import Services
from core.stats import COLUMNS, DEFAULT_PERIOD, PERIODS, TABLE_COLUMNS, DashboardData, Stats
from ui.context import TabContext

EMPTY_MESSAGE = "No replies yet in this period — chat first, then come back here."
_DATATYPES: list[Literal["str", "number"]] = ["str"]
_DATATYPES += ["number"] * (len(TABLE_COLUMNS) - 1)


def _money(value: float) -> str:
    return "$0" if value == 0 else f"${value:.4f}" if value < 100 else f"${value:,.2f}"


def summary_markdown(data: DashboardData) -> str:
    """The line above the table: totals for the period, or the empty-state message."""
    if data.problems:
        return "\n\n".join(f"⚠️ {html.escape(p)}" for p in data.problems)
    if data.empty:
        return f"### {EMPTY_MESSAGE}"
    cost = "unknown" if data.cost is None else _money(data.cost)
    if data.cost is not None and data.unpriced:
        cost += f" (+{data.unpriced} unpriced models)"
    models = len(data.rows)
    return (f"**{data.replies:,}** replies from **{models}** model{'s' if models != 1 else ''} · "
            f"**{data.tokens:,}** tokens · cost **{cost}** · **{data.failed:,}** failed · "
            f"**{data.refused:,}** refused · **{data.truncated:,}** cut off · "
            f"<span class='parley-muted'>{data.period.lower()}, your replies only</span>")


def plot_update(frame: pd.DataFrame, **extra: Any) -> dict[str, Any]:
    """A plot's update: its data, or hidden with no data when there is none. An empty frame is not sent:
    Vega draws it as an axis of "infinite extent" and says so in the browser's console."""
    if frame.empty:
        return gr.update(value=None, visible=False, **extra)
    return gr.update(value=frame, visible=True, **extra)


@dataclass
class DashboardView:
    """Named handles on the dashboard's components."""

    period: gr.Radio
    refresh_button: gr.Button
    summary: gr.Markdown
    table: gr.Dataframe
    ttft_plot: gr.BarPlot
    speed_plot: gr.BarPlot
    error_plot: gr.BarPlot
    activity_plot: gr.BarPlot
    results: gr.Column
    owner: gr.State
    #: Reload the dashboard (inputs: period, owner); attach it to more triggers with refresh_on.
    refresh: Callable[..., Any] = field(repr=False)

    def outputs(self) -> list[gr.blocks.Block]:
        return [self.summary, self.table, self.ttft_plot, self.speed_plot, self.error_plot, self.activity_plot, self.results]

    def refresh_on(self, *triggers: Any) -> None:
        """Reload on other events too, e.g. `view.refresh_on(tab.select)`."""
        gr.on(list(triggers), self.refresh, [self.period, self.owner], self.outputs(),
              api_visibility="private", show_progress="minimal")


class DashboardHandlers:
    def __init__(self, services: Services, prices: PriceTable | None = None,
                 now: Callable[[], datetime] | None = None):
        self.s = services
        self.stats = Stats(services, prices, now)
        self.view: DashboardView | None = None

    async def data(self, period: str, owner_state: str | None, request: gr.Request,
                   profile: gr.OAuthProfile | None = None) -> DashboardData:
        """This caller's usage over `period` (owner-scoped: there is no way to ask for someone else's)."""
        return await self.stats.dashboard(owner_for(request, profile, owner_state), period)

    async def refresh(self, period: str, owner_state: str | None, request: gr.Request,
                      profile: gr.OAuthProfile | None = None) -> dict[Any, Any]:
        """Reload the summary, table and plots for the chosen period."""
        assert self.view is not None, "refresh needs the view built by build_dashboard_tab"
        v = self.view
        data = await self.data(period, owner_state, request, profile)
        if data.empty:
            return {v.summary: summary_markdown(data), v.results: gr.update(visible=False),
                    v.table: gr.skip(), v.ttft_plot: gr.skip(), v.speed_plot: gr.skip(),
                    v.error_plot: gr.skip(), v.activity_plot: gr.skip()}
        frame = data.frame()
        activity = pd.DataFrame(data.activity, columns=["Time", "Model", "Replies"])
        # One colour per model while the legend can list them (its one row is cut past a handful of
        # names); with more, one per provider: the table has every model.
        color = "Model" if len(data.rows) <= ACTIVITY_MODELS else "Provider"
        raw = pd.DataFrame(data.rows, columns=COLUMNS)
        by_model = raw.assign(Label=raw["Provider"] + ":" + raw["Model"])
        return {
            v.summary: summary_markdown(data),
            v.results: gr.update(visible=True),
            v.table: frame,
            v.ttft_plot: plot_update(by_model[by_model["TTFT p95 (s)"].notna()]),
            v.speed_plot: plot_update(by_model[by_model["Tok/s"].notna()]),
            v.error_plot: plot_update(data.outcomes()),
            # An explicit order: the plot would otherwise sort the bucket labels alphabetically.
            v.activity_plot: plot_update(activity.assign(Provider=activity["Model"].str.split(":").str[0]),
                                         title=data.activity_title, color=color,
                                         sort=list(dict.fromkeys(a["Time"] for a in data.activity))),
        }


#: The most models the activity chart colours one by one (beyond, it colours by provider).
ACTIVITY_MODELS = 6
#: How the outcome chart colours each way a reply went wrong (errors stand out; cut-off replies least).
OUTCOME_COLORS = {"Error": "#c62828", "Refused": "#ef6c00", "Truncated": "#757575"}


def _bar(y: str, title: str, y_title: str, elem_id: str, color: str = "Provider", **kwargs: Any) -> gr.BarPlot:
    # Full width, labels at 45 degrees and room below them: 18 models' "provider:model" names stay
    # readable, and the legend is not cut (three plots side by side left each a third of the width).
    return gr.BarPlot(
        x="Label", y=y, color=color, title=title, x_title="Model", y_title=y_title, elem_id=elem_id,
        x_label_angle=-45, tooltip=["Label", color, y], height=340, show_label=False, sort="-y", **kwargs,
    )


def build_dashboard_tab(ctx: TabContext) -> DashboardView:
    """The dashboard: a period picker, totals, a per-model table and bar plots; loads when the tab opens."""
    handlers = DashboardHandlers(ctx.services)
    gr.Markdown("### Provider health\n<span class='parley-muted'>Your replies per provider and model, from the "
                "metrics saved with every chat turn (batch runs are not included; a blind comparison's "
                "replies count once you have voted on it).</span>")
    with gr.Row(equal_height=True):
        period = gr.Radio(list(PERIODS), value=DEFAULT_PERIOD, show_label=False, container=False,
                          elem_id="dash-period", scale=4)
        refresh_button = gr.Button("↻ Refresh", size="sm", scale=0, min_width=110, elem_id="dash-refresh")
    summary = gr.Markdown("Open this tab or press **Refresh** to load your usage.", elem_id="dash-summary")
    with gr.Column(visible=False, elem_id="dash-results") as results:
        table = gr.Dataframe(
            headers=TABLE_COLUMNS, datatype=_DATATYPES, interactive=False, show_label=False, elem_id="dash-table",
            max_height=360, buttons=["copy"], pinned_columns=1, wrap=True,
            column_widths=["20%", "8%", "8%", "8%", "9%", "7%", "7%", "7%", "8%", "9%", "9%"],
        )
        error_plot = _bar("% of replies", "Errors, refusals and cut-off replies", "% of replies", "dash-errors",
                          color="Outcome", color_map=OUTCOME_COLORS)
        ttft_plot = _bar("TTFT p95 (s)", "Time to first token, p95", "seconds", "dash-ttft")
        speed_plot = _bar("Tok/s", "Generation speed", "tokens / s", "dash-speed")
        activity_plot = gr.BarPlot(
            x="Time", y="Replies", color="Model", y_aggregate="sum", title="Replies", x_title="",
            y_title="replies", height=260, show_label=False, elem_id="dash-activity", x_label_angle=-30,
            sort=None,
        )
    view = DashboardView(period=period, refresh_button=refresh_button, summary=summary, table=table,
                         ttft_plot=ttft_plot, speed_plot=speed_plot, error_plot=error_plot,
                         activity_plot=activity_plot, results=results, refresh=handlers.refresh, owner=ctx.owner)
    handlers.view = view
    view.refresh_on(refresh_button.click, period.change)
    # Load when the tab is opened (the layout builds us inside a gr.Tab); reloading on each visit keeps
    # the numbers current without a timer.
    parent = gr.context.get_render_context()
    if isinstance(parent, gr.Tab):
        view.refresh_on(parent.select)
    return view
