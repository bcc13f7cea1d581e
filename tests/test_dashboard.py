"""The dashboard tab: chat turns through the app, then the owner-scoped numbers the tab shows."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import gradio as gr
import pandas as pd
import pytest
from gradio_client import Client

from compare.pricing import Price, PriceTable
from core.stats import BUCKETS, PERIODS, bucket_starts
from tests.apphelpers import app_env, in_process_app
from ui.context import TabContext
from ui.dashboard import EMPTY_MESSAGE, DashboardHandlers, build_dashboard_tab


@dataclass
class FakeRequest:
    """What owner_for reads from a gr.Request."""

    session_hash: str
    username: str | None = None


@pytest.fixture(scope="module")
def chatted(fake_server, tmp_path_factory):
    """An app with three good replies and one failed reply from one gradio_client session."""
    db = tmp_path_factory.mktemp("dashdb") / "parley.db"
    with in_process_app(app_env(fake_server, f"sqlite:///{db}")) as (url, services):
        # Fast retries: fail-500-always is retried before it is given up.
        services.policy = dataclasses.replace(services.policy, backoff_base=0.01, backoff_max=0.02)
        client = Client(url, verbose=False)
        for text in ("one", "two", "three"):
            client.predict(message=text, model="openai:fast", system_prompt="", api_name="/chat")
        client.predict(message="this one fails", model="openai:fail-500-always", system_prompt="", api_name="/chat")
        yield services, client.session_hash


def load(handlers: DashboardHandlers, period: str, request, owner_state=None):
    return asyncio.run(handlers.data(period, owner_state, request))


def by_model(data) -> dict[str, dict]:
    return {f"{r['Provider']}:{r['Model']}": r for r in data.rows}


def test_table_counts_match_the_chat_turns(chatted):
    services, session = chatted
    prices = PriceTable({"openai:fast": Price(1.0, 2.0)})
    data = load(DashboardHandlers(services, prices=prices), "Last hour", FakeRequest(session))
    rows = by_model(data)
    assert set(rows) == {"openai:fast", "openai:fail-500-always"}
    fast, failing = rows["openai:fast"], rows["openai:fail-500-always"]
    assert fast["Replies"] == 3 and fast["Errors (%)"] == 0
    assert failing["Replies"] == 1 and failing["Errors (%)"] == 100
    # The fake replies with 20 tokens; the cost uses the price table.
    assert fast["Tokens out"] == 60 and fast["Tokens in"] > 0
    assert fast["Cost ($)"] == pytest.approx((fast["Tokens in"] * 1.0 + 60 * 2.0) / 1e6)
    assert failing["Cost ($)"] is None, "an unpriced model has no cost, not a guess"
    assert fast["TTFT p50 (s)"] is not None and 0 < fast["TTFT p50 (s)"] <= fast["TTFT p95 (s)"] < 5
    assert fast["Tok/s"] is not None and fast["Tok/s"] > 0
    assert data.replies == 4
    # The activity chart holds the same replies, spread over its buckets.
    assert sum(a["Replies"] for a in data.activity) == 4


def test_another_owner_sees_nothing(chatted):
    services, session = chatted
    handlers = DashboardHandlers(services)
    assert load(handlers, "All time", FakeRequest("someone-else")).empty
    # The owner state cannot point at someone else's session either (only browser ids are taken from it).
    assert load(handlers, "All time", FakeRequest("someone-else"), owner_state=f"session:{session}").empty
    # A logged-in user is keyed by name, not by session.
    assert load(handlers, "All time", FakeRequest(session, username="mallory")).empty


def test_period_excludes_older_replies(chatted):
    services, session = chatted
    later = datetime.now(UTC) + timedelta(hours=2)
    handlers = DashboardHandlers(services, now=lambda: later)
    assert load(handlers, "Last hour", FakeRequest(session)).empty
    assert load(handlers, "Last 24 hours", FakeRequest(session)).replies == 4
    assert load(handlers, "All time", FakeRequest(session)).replies == 4


def test_refresh_fills_table_and_plots_or_shows_the_empty_message(chatted):
    services, session = chatted
    with gr.Blocks():
        ctx = TabContext(services=services, owner=gr.State(None), model=gr.Dropdown(), system_prompt=gr.Textbox(), params=[])
        with gr.Tab("Dashboard"):
            view = build_dashboard_tab(ctx)
    out = asyncio.run(view.refresh("Last 24 hours", None, FakeRequest(session)))
    table = out[view.table]
    assert isinstance(table, pd.DataFrame)
    assert table.set_index("Model").loc["openai:fast", "Replies"] == 3
    assert table.set_index("Model").loc["openai:fail-500-always", "Errors (%)"] == 100
    assert "**4** replies" in out[view.summary] and "**1** failed" in out[view.summary]
    assert out[view.results]["visible"] is True
    # The outcome chart shows the models that had an error, a refusal or a cut-off reply.
    assert set(out[view.error_plot]["value"]["Label"]) == {"openai:fail-500-always"}
    # No TTFT for a reply that never started: that bar is left out rather than drawn at zero.
    assert list(out[view.ttft_plot]["value"]["Label"]) == ["openai:fast"]
    activity = out[view.activity_plot]["value"]
    assert len(set(activity["Time"])) == 24 and activity["Replies"].sum() == 4

    empty = asyncio.run(view.refresh("Last 24 hours", None, FakeRequest("nobody")))
    assert EMPTY_MESSAGE in empty[view.summary]
    assert empty[view.results]["visible"] is False


def test_buckets_cover_the_period_and_end_at_now():
    now = datetime(2026, 7, 14, 15, 37, 12, tzinfo=UTC)
    for period, reach in PERIODS.items():
        b = BUCKETS[period]
        starts = bucket_starts(now, b)
        assert len(starts) == b.count and starts == sorted(starts)
        assert starts[-1] <= now < starts[-1] + b.step
        labels = [s.strftime(b.label_format) for s in starts]
        assert len(set(labels)) == len(labels), f"{period}: labels must be distinct"
        if reach is not None:
            assert starts[0] <= now - reach + b.step
