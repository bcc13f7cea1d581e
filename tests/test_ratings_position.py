"""Position bias, style control, honest ranks, votes needed and flips (compare/covariates.py, compare/ranks.py),
checked against simulated voters with known strengths."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compare.covariates import Battle, fit_with_covariates, position_bias, style_of, wilson
from compare.ranks import expected_win_rate, flips_to_change_first, rank_label, rank_ranges, votes_needed
from compare.ratings import BASE, SCALE, Vote, fit_ratings

TRUE = {"alpha": 1100.0, "beta": 1050.0, "gamma": 1000.0, "delta": 850.0}


def simulate(true: dict[str, float], n: int, rng: np.random.Generator, *, pane_a_logodds: float = 0.0,
             always_a: str | None = None) -> list[Battle]:
    """n two-pane votes. Pane A gets `pane_a_logodds` extra; `always_a` is always put in pane A when it
    plays (the others by a fair coin, as the app does)."""
    names = list(true)
    out = []
    for _ in range(n):
        i, j = rng.choice(len(names), 2, replace=False)
        x, y = names[i], names[j]
        share = 1.0 if x == always_a else 0.0 if y == always_a else 0.5
        first, second = (x, y) if rng.random() < share else (y, x)
        z = (true[first] - true[second]) / SCALE + pane_a_logodds
        won = rng.random() < 1.0 / (1.0 + math.exp(-z))
        out.append(Battle(first, second, "a" if won else "b", position=1))
    return out


def centred(r: dict[str, float]) -> dict[str, float]:
    mean = sum(r.values()) / len(r)
    return {k: v - mean + BASE for k, v in r.items()}


def test_intervals_cover_the_true_ratings_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(3)
    truth = centred(TRUE)
    hits = total = 0
    for sim in range(30):
        fit = fit_with_covariates(simulate(TRUE, 500, rng), rounds=100, seed=sim)
        for m, t in truth.items():
            hits += fit.ci_low[m] <= t <= fit.ci_high[m]
            total += 1
    assert 0.85 <= hits / total <= 1.0, hits / total


def test_a_built_in_position_bias_is_detected_and_does_not_move_the_ratings() -> None:
    rng = np.random.default_rng(7)
    # Pane A wins with +0.6 log-odds, and gamma always sits in pane A: a fit without the position term
    # credits gamma with pane A's advantage.
    battles = simulate(TRUE, 3000, rng, pane_a_logodds=0.6, always_a="gamma")
    bias = position_bias(battles)
    assert bias.n == 3000 and bias.ci_low is not None and bias.ci_low > 0.55, bias
    modelled = fit_with_covariates(battles, rounds=60, seed=1)
    low, high = modelled.coefficient_ci["position"]
    assert low < 0.6 < high and low > 0.3, modelled.coefficients
    truth = centred(TRUE)
    naive = fit_ratings([Vote(b.model_a, b.model_b, b.outcome) for b in battles])
    error_modelled = max(abs(modelled.rating[m] - truth[m]) for m in truth)
    error_naive = max(abs(naive[m] - truth[m]) for m in truth)
    assert error_modelled < 35, (modelled.rating, truth)
    assert error_naive > 2 * error_modelled, (naive, modelled.rating)


def test_no_position_bias_when_there_is_none() -> None:
    rng = np.random.default_rng(11)
    bias = position_bias(simulate(TRUE, 2000, rng))
    assert bias.ci_low is not None and bias.ci_high is not None and bias.ci_low < 0.5 < bias.ci_high


def test_position_bias_counts_only_decisive_battles_with_a_pane_a_side() -> None:
    battles = [Battle("x", "y", "a", 1), Battle("x", "y", "b", -1), Battle("x", "y", "b", 1),
               Battle("x", "y", "tie", 1), Battle("x", "y", "a", 0)]
    bias = position_bias(battles)
    assert (bias.n, bias.wins) == (3, 2)  # x in A won, y in A won, x in A lost
    assert position_bias([]).share is None


def test_wilson_interval_matches_a_hand_calculation() -> None:
    low, high = wilson(60, 100)
    assert low == pytest.approx(0.5020, abs=1e-4) and high == pytest.approx(0.6906, abs=1e-4)


def test_style_counts_markdown() -> None:
    text = "# Title\n\nSome **bold** and __more__.\n\n- one\n- two\n1. three\n## Sub\n"
    assert style_of(text) == (float(len(text)), 2.0, 3.0, 2.0)
    assert style_of("plain") == (5.0, 0.0, 0.0, 0.0)


def test_style_control_removes_a_length_preference() -> None:
    # Voters like longer replies; "verbose" writes long ones but is no better: its plain rating is inflated,
    # the style-controlled one is not.
    rng = np.random.default_rng(5)
    names = ["verbose", "terse", "middle"]
    lengths = {"verbose": 1500.0, "terse": 300.0, "middle": 700.0}
    battles = []
    for _ in range(2000):
        a, b = rng.choice(names, 2, replace=False)
        la, lb = lengths[a] * rng.uniform(0.7, 1.3), lengths[b] * rng.uniform(0.7, 1.3)
        z = 1.5 * (la - lb) / (la + lb)
        won = rng.random() < 1 / (1 + math.exp(-z))
        battles.append(Battle(str(a), str(b), "a" if won else "b", 0, (la, 0, 0, 0), (lb, 0, 0, 0)))
    plain = fit_with_covariates(battles, position=False, rounds=0)
    styled = fit_with_covariates(battles, position=False, style=True, rounds=0)
    assert plain.rating["verbose"] - plain.rating["terse"] > 100
    assert abs(styled.rating["verbose"] - styled.rating["terse"]) < 40, styled.rating
    assert styled.coefficients["length"] > 0.3


def test_rank_ranges_share_ranks_where_intervals_overlap() -> None:
    #           a: 1100-1200, b: 1080-1150 (overlaps a), c: 900-1000 (below both), d: 950-1090 (overlaps b and c)
    low, high = [1100, 1080, 900, 950], [1200, 1150, 1000, 1090]
    assert rank_ranges(low, high) == [(1, 2), (1, 3), (3, 4), (2, 4)]
    assert [rank_label(*r) for r in rank_ranges([10, 0], [20, 5])] == ["1", "2"]
    assert rank_label(1, 3) == "1–3"


@pytest.mark.parametrize(("p", "reference"), [(0.55, 780), (0.60, 190), (0.65, 85), (0.70, 47)])
def test_votes_needed_matches_the_reference_figures(p: float, reference: int) -> None:
    assert votes_needed(p) == pytest.approx(reference, rel=0.03)
    assert votes_needed(1 - p) == votes_needed(p)


def _binomial_critical(n: int, alpha: float = 0.05) -> int:
    """Smallest k with P(X ≥ k | n, ½) ≤ α/2: an exact two-sided binomial test rejects at k or n − k."""
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2) for k in range(n + 1)]
    tail = 0.0
    for k in range(n, -1, -1):
        tail += math.exp(logs[k])
        if tail > alpha / 2:
            return k + 1
    return 0


@pytest.mark.parametrize("p", [0.60, 0.65, 0.70])
def test_votes_needed_agrees_with_a_simulation_within_20_percent(p: float) -> None:
    # Simulate the exact binomial test: the smallest n (on a fine grid) reaching 80% power.
    rng = np.random.default_rng(int(p * 100))
    calc = votes_needed(p)
    assert calc is not None
    found = None
    for n in range(max(10, int(calc * 0.6)), int(calc * 1.5), max(1, calc // 50)):
        k = _binomial_critical(n)
        wins = rng.binomial(n, p, size=4000)
        power = np.mean((wins >= k) | (wins <= n - k))
        if power >= 0.8:
            found = n
            break
    assert found is not None and abs(found - calc) / calc <= 0.2, (found, calc)


def test_votes_needed_for_equal_models_is_none_and_bad_rates_are_refused() -> None:
    assert votes_needed(0.5) is None
    with pytest.raises(ValueError):
        votes_needed(1.0)
    assert expected_win_rate(1000 + SCALE * math.log(3), 1000) == pytest.approx(0.75)


def test_flips_to_change_first() -> None:
    # a beat b 6-4 and both beat c: flipping 2 of a's wins over b (→ 4-6) puts b first; 1 flip makes 5-5
    # (equal ratings keep the leader).
    votes = [Vote("a", "b", "a")] * 6 + [Vote("b", "a", "a")] * 4 + [Vote("a", "c", "a"), Vote("b", "c", "a")] * 3
    f = flips_to_change_first(votes, "a")
    assert (f.challenger, f.flips) == ("b", 2)
    lone = flips_to_change_first([Vote("a", "c", "a")], "a")
    assert lone.flips == 1 and lone.challenger == "c"
    assert flips_to_change_first([], "a").flips is None
