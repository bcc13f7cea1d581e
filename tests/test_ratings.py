"""Leaderboard math: Bradley–Terry recovery, bootstrap coverage, ties, degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from chat.errors import ChatError
from compare.ratings import (
    BASE,
    FRAME_COLUMNS,
    SCALE,
    RatingsError,
    Vote,
    as_vote,
    best_of,
    fit_ratings,
    leaderboard,
)


def simulate(true: dict[str, float], n: int, rng: np.random.Generator, tie_rate: float = 0.0) -> list[Vote]:
    """n votes between random distinct pairs; the winner drawn from Bradley–Terry on the Elo scale."""
    names = list(true)
    votes = []
    for _ in range(n):
        i, j = rng.choice(len(names), 2, replace=False)
        a, b = names[i], names[j]
        if rng.random() < tie_rate:
            votes.append(Vote(a, b, "tie"))
            continue
        p_a = 1.0 / (1.0 + 10 ** (-(true[a] - true[b]) / 400.0))
        votes.append(Vote(a, b, "a" if rng.random() < p_a else "b"))
    return votes


def test_recovers_the_true_order():
    true = {f"m{k}": 1000.0 + 100.0 * (k - 3.5) for k in range(8)}  # 100-point steps
    votes = simulate(true, 4000, np.random.default_rng(7))
    lb = leaderboard(votes, rounds=50)
    assert lb.models == sorted(true, key=true.get, reverse=True)
    assert [r.rank for r in lb.ratings] == list(range(1, 9))
    # The scale is Elo's: fitted gaps are close to the true ones, and the mean is BASE.
    fitted = {r.model: r.rating for r in lb.ratings}
    assert abs(np.mean(list(fitted.values())) - BASE) < 1e-6
    gaps = [fitted[f"m{k + 1}"] - fitted[f"m{k}"] for k in range(7)]
    assert 70 < np.mean(gaps) < 130
    for r in lb.ratings:
        assert r.ci_low <= r.rating <= r.ci_high


def test_bootstrap_intervals_cover_the_truth_at_about_the_nominal_rate():
    # Ratings are identified up to a shift: the fit centres its estimates on BASE, so centre the truth too.
    raw = np.array([-180.0, -60.0, 0.0, 40.0, 200.0])
    true = {f"m{k}": BASE + x - raw.mean() for k, x in enumerate(raw)}
    rng = np.random.default_rng(2024)
    covered = total = 0
    widths = []
    for sim in range(30):
        lb = leaderboard(simulate(true, 400, rng), rounds=200, seed=sim)
        for r in lb.ratings:
            total += 1
            covered += r.ci_low <= true[r.model] <= r.ci_high
            widths.append(r.ci_high - r.ci_low)
    coverage = covered / total
    assert 0.85 <= coverage <= 0.995, coverage
    # Sanity on the width: 160 battles a model give a standard error of roughly 30 points, so ±60.
    assert 60 < np.median(widths) < 250


def test_ties_count_half_and_both_bad_is_a_tie():
    votes = [("a", "b", "a")] * 3 + [("a", "b", "tie"), ("b", "a", "both_bad")]
    lb = leaderboard(votes, rounds=20)
    a, b = lb.rating_of("a"), lb.rating_of("b")
    assert a.votes == b.votes == 5 and a.ties == b.ties == 2
    assert a.win_rate == pytest.approx(0.8) and b.win_rate == pytest.approx(0.2)
    assert a.wins == pytest.approx(4.0)
    assert lb.win_matrix["a"]["b"] == pytest.approx(0.8) and lb.win_matrix["b"]["a"] == pytest.approx(0.2)
    assert lb.win_matrix["a"]["a"] is None

    only_ties = leaderboard([("x", "y", "tie"), ("y", "x", "both_bad")] * 5, rounds=20)
    x, y = only_ties.rating_of("x"), only_ties.rating_of("y")
    assert x.rating == pytest.approx(BASE) and y.rating == pytest.approx(BASE)
    assert x.win_rate == y.win_rate == 0.5


def test_ties_pull_ratings_together():
    decisive = fit_ratings([("a", "b", "a")] * 6 + [("a", "b", "b")] * 2)
    with_ties = fit_ratings([("a", "b", "a")] * 6 + [("a", "b", "b")] * 2 + [("a", "b", "tie")] * 8)
    assert 0 < with_ties["a"] - with_ties["b"] < decisive["a"] - decisive["b"]


def test_fit_matches_the_closed_form_for_two_models():
    # With two models, p = 0.75 means a gap of log(3) log-odds; the weak prior shrinks it only slightly.
    r = fit_ratings([("a", "b", "a")] * 300 + [("a", "b", "b")] * 100)
    assert r["a"] - r["b"] == pytest.approx(SCALE * math.log(3), rel=0.01)


def test_order_of_a_and_b_in_a_vote_does_not_matter():
    one = leaderboard([("a", "b", "a"), ("b", "c", "b"), ("c", "a", "tie")], rounds=30, seed=1)
    two = leaderboard([("b", "a", "b"), ("c", "b", "a"), ("a", "c", "tie")], rounds=30, seed=1)
    assert {r.model: round(r.rating, 6) for r in one.ratings} == {r.model: round(r.rating, 6) for r in two.ratings}


def test_a_model_that_always_wins_stays_finite():
    votes = [("champ", "b", "a")] * 30 + [("c", "champ", "b")] * 30 + [("b", "c", "a"), ("b", "c", "b")] * 5
    lb = leaderboard(votes, rounds=100)
    champ = lb.ratings[0]
    assert champ.model == "champ" and champ.win_rate == 1.0
    for r in lb.ratings:
        assert all(math.isfinite(x) for x in (r.rating, r.ci_low, r.ci_high))
    assert champ.rating - lb.ratings[-1].rating < 2000  # large, not runaway


def test_disconnected_groups_are_finite():
    lb = leaderboard([("a", "b", "a")] * 4 + [("c", "d", "b")] * 4, rounds=20)
    assert all(math.isfinite(r.rating) for r in lb.ratings)
    assert lb.win_matrix["a"]["c"] is None and lb.battles["a"]["c"] == 0


def test_no_votes_and_one_model():
    empty = leaderboard([])
    assert empty.ratings == [] and empty.total_votes == 0
    frame = empty.to_frame()
    assert list(frame.columns) == FRAME_COLUMNS and len(frame) == 0

    lone = leaderboard([], models=["only"])
    (row,) = lone.ratings
    assert (row.rating, row.ci_low, row.ci_high, row.votes, row.win_rate) == (BASE, BASE, BASE, 0, None)
    assert math.isnan(lone.to_frame()["win_rate"].iloc[0])
    assert fit_ratings([]) == {}

    # Listed models without votes sit at the mean; the others are unaffected in order.
    lb = leaderboard([("a", "b", "a")] * 3, models=["idle", "a", "b"], rounds=20)
    assert lb.rating_of("idle").rating == pytest.approx(BASE) and lb.rating_of("idle").votes == 0
    assert lb.models == ["a", "idle", "b"]


def test_bad_votes_have_clear_errors():
    with pytest.raises(RatingsError, match="with itself"):
        leaderboard([("a", "b", "a"), ("a", "a", "tie")])
    with pytest.raises(RatingsError, match=r"Vote #2 has outcome 'left'.*a, b, tie, both_bad"):
        leaderboard([("a", "b", "a"), ("a", "b", "left")])
    with pytest.raises(RatingsError, match="no 'outcome'"):
        as_vote({"model_a": "a", "model_b": "b"})
    with pytest.raises(RatingsError, match="two model names"):
        as_vote(("a", "", "a"))
    with pytest.raises(RatingsError, match="confidence"):
        leaderboard([], confidence=1.5)
    # Callers may catch either the app's base error or ValueError.
    assert issubclass(RatingsError, ChatError) and issubclass(RatingsError, ValueError)


def test_mapping_votes_are_accepted():
    lb = leaderboard([{"model_a": "a", "model_b": "b", "outcome": "b"}], rounds=0)
    assert lb.models == ["b", "a"]
    assert lb.rating_of("b").ci_low == lb.rating_of("b").rating  # rounds=0: no interval


def test_best_of_n_expands_into_pairwise_wins():
    assert best_of(["x", "y", "z"], "y") == [Vote("y", "x", "a"), Vote("y", "z", "a")]
    assert best_of(["x", "y", "z"], "tie") == [Vote("x", "y", "tie"), Vote("x", "z", "tie"), Vote("y", "z", "tie")]
    assert len(best_of(["x", "y"], "both_bad")) == 1
    with pytest.raises(RatingsError, match="not one of"):
        best_of(["x", "y"], "w")
    with pytest.raises(RatingsError, match="at least two"):
        best_of(["x"], "x")
    with pytest.raises(RatingsError, match="twice"):
        best_of(["x", "x"], "x")


def test_bootstrap_is_reproducible_with_a_seed():
    votes = simulate({"a": 1050, "b": 1000, "c": 950}, 200, np.random.default_rng(3))
    one = leaderboard(votes, rounds=50, seed=11).to_frame(decimals=None)
    two = leaderboard(votes, rounds=50, seed=11).to_frame(decimals=None)
    pd.testing.assert_frame_equal(one, two)


def test_frames_for_display():
    lb = leaderboard([("a", "b", "a"), ("a", "c", "a"), ("b", "c", "tie")], rounds=10)
    frame = lb.to_frame()
    assert list(frame.columns) == FRAME_COLUMNS
    assert frame["model"].tolist() == lb.models and frame["rank"].tolist() == [1, 2, 3]
    wm = lb.win_matrix_frame()
    assert list(wm.index) == list(wm.columns) == lb.models
    assert wm.loc["a", "b"] == 1.0 and math.isnan(wm.loc["a", "a"]) and wm.loc["b", "c"] == 0.5
