"""The usage-statistics use case (core.stats.Stats) without Gradio: turns of two models saved in real storage
(SQLite, and PostgreSQL when TEST_DATABASE_URL is set), then the numbers the dashboard shows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from compare.pricing import Price, PriceTable
from core.services import Services
from core.stats import BUCKETS, DEFAULT_PERIOD, Stats
from core.store import start_turn
from storage import repository as repo
from storage.errors import StorageUnavailable

ALICE = "user:alice"


def reply(engine: sa.Engine, owner: str, model: str, *, tokens_in: int, tokens_out: int, ttft_ms: int | None,
          error: str | None = None) -> None:
    """A one-turn chat whose reply carries these metrics (a failed reply carries its error)."""
    provider, name = model.split(":", 1)
    with Session(engine) as session:
        ids = start_turn(session=session, owner=owner, conversation_id=None, history_user_texts=[], content="hi",
                         provider=provider, model=name, system_prompt="", params={})
        repo.finish_turn(session=session, owner=owner, message_id=ids.assistant_message_id,
                         content="" if error else "hello", finish_reason="error" if error else "stop",
                         provider=provider, model=name, input_tokens=tokens_in, output_tokens=tokens_out,
                         ttft_ms=ttft_ms, duration_ms=None if ttft_ms is None else ttft_ms + 1000, error=error)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_stats_over_turns_of_two_models(services: Services, engine: sa.Engine) -> None:
    for _ in range(3):
        reply(engine, ALICE, "demo:fast", tokens_in=100, tokens_out=50, ttft_ms=200)
    reply(engine, ALICE, "demo:slow", tokens_in=10, tokens_out=0, ttft_ms=None, error="The provider failed.")
    reply(engine, "user:bob", "demo:fast", tokens_in=999, tokens_out=999, ttft_ms=100)  # someone else's

    stats = Stats(services, prices=PriceTable({"demo:fast": Price(1.0, 2.0)}))
    data = run(stats.dashboard(ALICE, "Last hour"))
    rows = {f"{r['Provider']}:{r['Model']}": r for r in data.rows}
    assert set(rows) == {"demo:fast", "demo:slow"}
    fast, slow = rows["demo:fast"], rows["demo:slow"]
    assert (fast["Replies"], fast["Tokens in"], fast["Tokens out"], fast["Errors (%)"]) == (3, 300, 150, 0)
    assert fast["Cost ($)"] == pytest.approx((300 * 1.0 + 150 * 2.0) / 1e6)
    assert fast["TTFT p50 (s)"] == pytest.approx(0.2) and fast["Tok/s"] == pytest.approx(50.0)
    assert (slow["Replies"], slow["Errors (%)"], slow["Cost ($)"], slow["TTFT p50 (s)"]) == (1, 100, None, None)

    # The totals the summary line shows.
    assert (data.replies, data.tokens, data.failed, data.unpriced) == (4, 460, 1, 1)
    assert data.cost == pytest.approx(600 / 1e6)
    assert list(data.frame()["Model"]) == [f"{r['Provider']}:{r['Model']}" for r in data.rows]
    # The activity chart: every bucket of the period on the axis, the replies in them.
    assert len({a["Time"] for a in data.activity}) == BUCKETS["Last hour"].count
    assert sum(a["Replies"] for a in data.activity) == 4 and data.activity_title == BUCKETS["Last hour"].title


def test_periods_and_owners(services: Services, engine: sa.Engine) -> None:
    reply(engine, ALICE, "demo:fast", tokens_in=1, tokens_out=20, ttft_ms=100)
    later = datetime.now(UTC) + timedelta(hours=2)
    stats = Stats(services, prices=PriceTable({}), now=lambda: later)
    assert run(stats.dashboard(ALICE, "Last hour")).empty
    assert run(stats.dashboard(ALICE, "Last 24 hours")).replies == 1
    assert run(stats.dashboard(ALICE, "All time")).replies == 1
    assert run(stats.dashboard("user:bob", "All time")).empty
    unknown = run(stats.dashboard(ALICE, "forever"))
    assert unknown.period == DEFAULT_PERIOD and unknown.replies == 1


def test_a_storage_failure_is_a_problem_not_an_exception(services: Services) -> None:
    def down(**_: Any) -> Any:
        raise StorageUnavailable("The database is unavailable or busy; try again shortly (test).")

    data = run(Stats(services, prices=PriceTable({}), over_time=down).dashboard(ALICE, "Last hour"))
    assert data.empty and data.problems == ["The database is unavailable or busy; try again shortly (test)."]
