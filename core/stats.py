"""Usage statistics as a use case: per provider and model, one owner's replies, tokens, cost, latency and errors.

The dashboard tab shows what `Stats.dashboard` returns; another surface (an API, a report) can ask the
same question and get the same numbers, prices included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlmodel import Session

from compare.pricing import PriceTable
from core.services import Services
from storage import repository as repo
from storage.errors import StorageError
from storage.models import ModelStats

log = logging.getLogger("parley.stats")

#: Period label -> how far back it reaches (None: everything stored).
PERIODS: dict[str, timedelta | None] = {
    "Last hour": timedelta(hours=1),
    "Last 24 hours": timedelta(days=1),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "All time": None,
}
DEFAULT_PERIOD = "Last 7 days"

#: Keys of DashboardData.rows; the table shows them with "provider:model" as one Model column.
COLUMNS = ["Provider", "Model", "Replies", "Tokens in", "Tokens out", "Cost ($)",
           "TTFT p50 (s)", "TTFT p95 (s)", "Tok/s", "Errors (%)", "Refused (%)", "Truncated (%)"]
#: Health first (errors, then refusals and cut-off replies, which are not model errors; latency, speed),
#: then volume and cost.
TABLE_COLUMNS = ["Model", "Replies", "Errors (%)", "Refused (%)", "Truncated (%)", "TTFT p50 (s)", "TTFT p95 (s)", "Tok/s",
                 "Tokens in", "Tokens out", "Cost ($)"]
#: How a reply ended, as the outcome chart names it, and the row key that holds its share.
OUTCOMES = {"Error": "Errors (%)", "Refused": "Refused (%)", "Truncated": "Truncated (%)"}


@dataclass(frozen=True, slots=True)
class Buckets:
    """How the activity chart slices a period: `count` buckets of `step`, aligned to `step`."""

    step: timedelta
    count: int
    label_format: str
    title: str


# At most 30 buckets per period, so the activity chart stays readable (all read in one grouped query).
BUCKETS: dict[str, Buckets] = {
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

    @property
    def tokens(self) -> int:
        """Input and output tokens of every reply in the period."""
        return sum(r["Tokens in"] + r["Tokens out"] for r in self.rows)

    @property
    def cost(self) -> float | None:
        """The priced models' cost (None when no model has a price)."""
        known = [r["Cost ($)"] for r in self.rows if r["Cost ($)"] is not None]
        return sum(known) if known else None

    @property
    def unpriced(self) -> int:
        """Models in the period without a price (their cost is left out of `cost`)."""
        return sum(1 for r in self.rows if r["Cost ($)"] is None)

    @property
    def failed(self) -> int:
        """Replies that ended in an error."""
        return sum(round(r["Replies"] * r["Errors (%)"] / 100) for r in self.rows)

    @property
    def refused(self) -> int:
        """Replies refused for their content (moderation, a provider's filter): not counted as failed."""
        return sum(round(r["Replies"] * r["Refused (%)"] / 100) for r in self.rows)

    @property
    def truncated(self) -> int:
        """Replies cut off (the token limit, or a stream that ended without finishing)."""
        return sum(round(r["Replies"] * r["Truncated (%)"] / 100) for r in self.rows)

    def outcomes(self) -> pd.DataFrame:
        """The outcome chart: per model, the share of its replies that failed, were refused or were cut off
        (long form, one row per model and outcome with a share above 0)."""
        rows = [{"Label": f"{r['Provider']}:{r['Model']}", "Outcome": outcome, "% of replies": r[key]}
                for r in self.rows for outcome, key in OUTCOMES.items() if r[key]]
        return pd.DataFrame(rows, columns=["Label", "Outcome", "% of replies"])

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


def usage_over_time(*, session: Session, owner: str, since: datetime | None, until: datetime,
                    starts: list[datetime], step: timedelta) -> tuple[list[ModelStats], list[list[ModelStats]]]:
    """The period's stats and every bucket's (one grouped query), in one session (one worker-thread hop)."""
    totals = repo.usage_stats(session=session, owner=owner, since=since, until=until)
    if not totals:
        return totals, []
    per_bucket = repo.usage_over_time(session=session, owner=owner, edges=[*starts, starts[-1] + step])
    return totals, per_bucket


#: The storage step that reads a period's totals and its buckets (usage_over_time's signature).
OverTime = Callable[..., tuple[list[ModelStats], list[list[ModelStats]]]]


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
        "Refused (%)": round(s.refused_rate * 100, 1),
        "Truncated (%)": round(s.truncated_rate * 100, 1),
    }


class Stats:
    """One owner's usage statistics over a period, priced with `prices`."""

    def __init__(self, services: Services, prices: PriceTable | None = None,
                 now: Callable[[], datetime] | None = None, over_time: OverTime | None = None):
        self.s = services
        self.prices = prices if prices is not None else PriceTable.from_env()
        self._now = now or (lambda: datetime.now(UTC))
        self._over_time = over_time or usage_over_time

    async def dashboard(self, owner: str, period: str) -> DashboardData:
        """This owner's usage over `period` (an unknown period is the default one).

        A storage failure is not raised: the data comes back empty with the failure in `problems`.
        """
        if period not in PERIODS:
            period = DEFAULT_PERIOD
        now = self._now()
        reach = PERIODS[period]
        since = None if reach is None else now - reach
        buckets = BUCKETS[period]
        starts = bucket_starts(now, buckets)
        try:
            totals, per_bucket = await self.s.db(self._over_time, owner=owner, since=since, until=now,
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
