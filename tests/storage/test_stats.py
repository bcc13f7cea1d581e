"""Usage statistics per provider+model, checked against numbers worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from storage import repository as repo
from tests.storage.helpers import add_turn


def _replies(session, owner, model, ttfts, **extra):
    conversation = repo.create_conversation(session=session, owner=owner).id
    for i, ttft in enumerate(ttfts):
        add_turn(session, owner, conversation, f"q{i}", f"a{i}", provider="demo", model=model, ttft_ms=ttft, **extra)
    return conversation


def test_percentiles_counts_and_rates(session):
    # ttft 100..500: p50 = 300, p95 = 400 + 0.8 * 100 = 480 (linear interpolation).
    _replies(session, "alice", "fast", [100, 200, 300, 400, 500], input_tokens=10, output_tokens=100, duration_ms=1100)
    conversation = _replies(session, "bob", "slow", [1000], input_tokens=5, output_tokens=0, duration_ms=1000)
    add_turn(session, "bob", conversation, "q", "", provider="demo", model="slow", finish_reason="error", error="boom")
    add_turn(session, "bob", conversation, "q", "", provider="other", model="slow", ttft_ms=50)
    repo.begin_turn(session=session, owner="bob", conversation_id=conversation, content="pending is not counted", provider="demo", model="slow")

    stats = {(s.provider, s.model): s for s in repo.usage_stats(session=session, owner=None)}
    assert set(stats) == {("demo", "fast"), ("demo", "slow"), ("other", "slow")}
    fast = stats["demo", "fast"]
    assert (fast.count, fast.input_tokens, fast.output_tokens) == (5, 50, 500)
    assert fast.ttft_p50_ms == pytest.approx(300)
    assert fast.ttft_p95_ms == pytest.approx(480)
    assert fast.error_rate == 0
    # 500 tokens over 5 * 1100 ms minus 1500 ms of waiting for first tokens = 4000 ms -> 125 tok/s.
    assert fast.tokens_per_second == pytest.approx(125)
    slow = stats["demo", "slow"]
    assert (slow.count, slow.error_rate, slow.ttft_p50_ms, slow.ttft_p95_ms) == (2, 0.5, 1000, 1000)
    assert stats["other", "slow"].tokens_per_second is None

    only_alice = repo.usage_stats(session=session, owner="alice")
    assert [(s.model, s.count) for s in only_alice] == [("fast", 5)]


def test_time_period(session, engine):
    _replies(session, "alice", "m", [100, 300])
    with engine.begin() as connection:  # move one reply a week back
        connection.execute(
            text("UPDATE message SET created_at = :t WHERE content = 'a0'"),
            {"t": datetime.now(UTC) - timedelta(days=7)},
        )
    now = datetime.now(UTC)
    recent = repo.usage_stats(session=session, owner="alice", since=now - timedelta(days=1))
    assert [(s.count, s.ttft_p50_ms) for s in recent] == [(1, 300)]
    older = repo.usage_stats(session=session, owner="alice", until=now - timedelta(days=1))
    assert [(s.count, s.ttft_p50_ms) for s in older] == [(1, 100)]
    assert repo.usage_stats(session=session, owner="alice", since=now + timedelta(days=1)) == []
    naive = repo.usage_stats(session=session, owner="alice", since=(now - timedelta(days=30)).replace(tzinfo=None))
    assert naive[0].count == 2


def test_empty(session):
    assert repo.usage_stats(session=session, owner=None) == []
