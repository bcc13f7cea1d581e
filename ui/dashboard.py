"""The dashboard tab: per provider and model, this user's replies, tokens, cost, latency and errors."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import gradio as gr
import pandas as pd
from sqlmodel import Session

from compare.pricing import PriceTable
from core.identity import owner_for
from core.services import Services
from storage import repository as repo
from storage.errors import StorageError
from storage.models import ModelStats
from ui.context import TabContext

log = logging.getLogger("parley.dashboard")

#: Period label -> how far back it reaches (None: everything stored).
PERIODS: dict[str, timedelta | None] = {
    "Last hour": timedelta(hours=1),
    "Last 24 hours": timedelta(days=1),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "All time": None,
}
DEFAULT_PERIOD = "Last 7 days"
EMPTY_MESSAGE = "No replies yet in this period — chat first, then come back here."

#: Keys of DashboardData.rows; the table shows them with "provider:model" as one Model column.
COLUMNS = ["Provider", "Model", "Replies", "Tokens in", "Tokens out", "Cost ($)",
           "TTFT p50 (s)", "TTFT p95 (s)", "Tok/s", "Errors (%)"]
#: Health first (errors, latency, speed), then volume and cost.
TABLE_COLUMNS = ["Model", "Replies", "Errors (%)", "TTFT p50 (s)", "TTFT p95 (s)", "Tok/s", "Tokens in", "Tokens out",
                 "Cost ($)"]
_DATATYPES = ["str"] + ["number"] * (len(TABLE_COLUMNS) - 1)


@dataclass(frozen=True, slots=True)
class Buckets:
    """How the activity chart slices a period: `count` buckets of `step`, aligned to `step`."""

    step: timedelta
    count: int
    label_format: str
    title: str


# One usage_stats query per bucket, so the counts stay small (at most 30 queries per refresh).
_BUCKETS: dict[str, Buckets] = {
    "Last hour": Buckets(timedelta(minutes=5), 12, "%H:%M", "Replies per 5 minutes (UTC)"),
    "Last 24 hours": Buckets(timedelta(hours=1), 24, "%d %b %H:00", "Replies per hour (UTC)"),
    "Last 7 days": Buckets(timedelta(days=1), 7, "%a %d %b", "Replies per day (UTC)"),
    "Last 30 days": Buckets(timedelta(days=1), 30, "%d %b", "Replies per day (UTC)"),
    "All time": Buckets(timedelta(days=1), 30, "%d %b", "Replies per day, last 30 days (UTC)"),
}


@dataclass(frozen=True)
class DashboardData:
    """What the dashboard shows for one owner and period."""

    period: str
    rows: list[dict[str, Any]]  # one per provider+model, keys COLUMNS
    activity: list[dict[str, Any]]  # {"Time", "Model", "Replies"} per bucket and model, oldest bucket first
    activity_title: str
    since: datetime | None
    until: datetime
    problems: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.rows

    @property
    def replies(self) -> int:
        return sum(r["Replies"] for r in self.rows)

    def frame(self) -> pd.DataFrame:
        """The table: one row per provider+model, the model written provider:model."""
        frame = pd.DataFrame(self.rows, columns=COLUMNS)
        frame["Model"] = frame["Provider"] + ":" + frame["Model"]
        return frame[TABLE_COLUMNS]


def bucket_starts(now: datetime, buckets: Buckets) -> list[datetime]:
    """Bucket start times, oldest first; the last bucket holds `now`."""
    step_s = buckets.step.total_seconds()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    aligned = epoch + timedelta(seconds=(now - epoch).total_seconds() // step_s * step_s)
    return [aligned - buckets.step * (buckets.count - 1 - i) for i in range(buckets.count)]


def _usage_over_time(*, session: Session, owner: str, since: datetime | None, until: datetime,
                     starts: list[datetime], step: timedelta) -> tuple[list[ModelStats], list[list[ModelStats]]]:
    """The period's stats and every bucket's (one grouped query), in one session (one worker-thread hop)."""
    totals = repo.usage_stats(session=session, owner=owner, since=since, until=until)
    if not totals:
        return totals, []
    per_bucket = repo.usage_over_time(session=session, owner=owner, edges=[*starts, starts[-1] + step])
    return totals, per_bucket


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000, 3)


def stats_row(s: ModelStats, prices: PriceTable) -> dict[str, Any]:
    """One table row from a provider+model's stats."""
    cost = prices.cost(f"{s.provider}:{s.model}", s.input_tokens, s.output_tokens)
    return {
        "Provider": s.provider,
        "Model": s.model,
        "Replies": s.count,
        "Tokens in": s.input_tokens,
        "Tokens out": s.output_tokens,
        "Cost ($)": None if cost is None else round(cost, 6),
        "TTFT p50 (s)": _seconds(s.ttft_p50_ms),
        "TTFT p95 (s)": _seconds(s.ttft_p95_ms),
        "Tok/s": None if s.tokens_per_second is None else round(s.tokens_per_second, 1),
        "Errors (%)": round(s.error_rate * 100, 1),
    }


def _money(value: float) -> str:
    return "$0" if value == 0 else f"${value:.4f}" if value < 100 else f"${value:,.2f}"


def summary_markdown(data: DashboardData) -> str:
    """The line above the table: totals for the period, or the empty-state message."""
    if data.problems:
        return "\n\n".join(f"⚠️ {html.escape(p)}" for p in data.problems)
    if data.empty:
        return f"### {EMPTY_MESSAGE}"
    tokens = sum(r["Tokens in"] + r["Tokens out"] for r in data.rows)
    costs = [r["Cost ($)"] for r in data.rows]
    known = [c for c in costs if c is not None]
    cost = _money(sum(known)) if known else "unknown"
    if known and len(known) < len(costs):
        cost += f" (+{len(costs) - len(known)} unpriced models)"
    errors = sum(round(r["Replies"] * r["Errors (%)"] / 100) for r in data.rows)
    models = len(data.rows)
    return (f"**{data.replies:,}** replies from **{models}** model{'s' if models != 1 else ''} · "
            f"**{tokens:,}** tokens · cost **{cost}** · **{errors:,}** failed · "
            f"<span class='parley-muted'>{data.period.lower()}, your replies only</span>")


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

    def outputs(self) -> list[gr.components.Component]:
        return [self.summary, self.table, self.ttft_plot, self.speed_plot, self.error_plot, self.activity_plot, self.results]

    def refresh_on(self, *triggers: Any) -> None:
        """Reload on other events too, e.g. `view.refresh_on(tab.select)`."""
        gr.on(list(triggers), self.refresh, [self.period, self.owner], self.outputs(),
              api_visibility="private", show_progress="minimal")


class DashboardHandlers:
    def __init__(self, services: Services, prices: PriceTable | None = None,
                 now: Callable[[], datetime] | None = None):
        self.s = services
        self.prices = prices if prices is not None else PriceTable.from_env()
        self._now = now or (lambda: datetime.now(UTC))
        self.view: DashboardView | None = None

    async def data(self, period: str, owner_state: str | None, request: gr.Request,
                   profile: gr.OAuthProfile | None = None) -> DashboardData:
        """This caller's usage over `period` (owner-scoped: there is no way to ask for someone else's)."""
        owner = owner_for(request, profile, owner_state)
        if period not in PERIODS:
            period = DEFAULT_PERIOD
        now = self._now()
        reach = PERIODS[period]
        since = None if reach is None else now - reach
        buckets = _BUCKETS[period]
        starts = bucket_starts(now, buckets)
        try:
            totals, per_bucket = await self.s.db(_usage_over_time, owner=owner, since=since, until=now,
                                                 starts=starts, step=buckets.step)
        except StorageError as e:
            log.warning("dashboard for %s failed: %s", owner, e)
            return DashboardData(period, [], [], buckets.title, since, now, problems=[e.message])
        labels = [start.strftime(buckets.label_format) for start in starts]
        activity: list[dict[str, Any]] = []
        for label, stats in zip(labels, per_bucket):
            activity += [{"Time": label, "Model": f"{s.provider}:{s.model}", "Replies": s.count} for s in stats]
            if not stats:  # an empty bucket still gets its place on the axis
                activity.append({"Time": label, "Model": f"{totals[0].provider}:{totals[0].model}", "Replies": 0})
        rows = [stats_row(s, self.prices) for s in totals]
        return DashboardData(period, rows, activity, buckets.title, since, now)

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
        raw = pd.DataFrame(data.rows, columns=COLUMNS)
        by_model = raw.assign(Label=raw["Provider"] + ":" + raw["Model"])
        return {
            v.summary: summary_markdown(data),
            v.results: gr.update(visible=True),
            v.table: frame,
            v.ttft_plot: by_model[by_model["TTFT p95 (s)"].notna()],
            v.speed_plot: by_model[by_model["Tok/s"].notna()],
            v.error_plot: by_model,
            # An explicit order: the plot would otherwise sort the bucket labels alphabetically.
            v.activity_plot: gr.update(value=pd.DataFrame(data.activity, columns=["Time", "Model", "Replies"]),
                                       title=data.activity_title,
                                       sort=list(dict.fromkeys(a["Time"] for a in data.activity))),
        }


def _bar(y: str, title: str, y_title: str, elem_id: str) -> gr.BarPlot:
    return gr.BarPlot(
        x="Label", y=y, color="Provider", title=title, x_title="Model", y_title=y_title, elem_id=elem_id,
        x_label_angle=-30, tooltip=["Label", y], height=260, show_label=False, sort="-y",
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
            column_widths=["24%", "8%", "9%", "10%", "10%", "9%", "10%", "10%", "10%"],
        )
        with gr.Row():
            ttft_plot = _bar("TTFT p95 (s)", "Time to first token, p95", "seconds", "dash-ttft")
            speed_plot = _bar("Tok/s", "Generation speed", "tokens / s", "dash-speed")
            error_plot = _bar("Errors (%)", "Error rate", "% of replies", "dash-errors")
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
