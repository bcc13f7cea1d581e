"""Statistics for scored batch runs: a model's mean score with a 95% interval, and paired comparisons of two models.

Two models run on the same prompts are compared prompt by prompt (a paired design: the prompt's
difficulty cancels out), as arXiv 2411.00640 recommends for small evaluations. Formulas and sources are
in compare/README.md. Seeded: the same scores give the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ROUNDS = 2000  # bootstrap resamples
Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class ScoreStats:
    """A model's scores: n scored replies, their mean and its 95% interval (None when n is 0)."""

    n: int
    mean: float | None
    ci: tuple[float, float] | None
    method: str  # "wilson" (every score 0 or 1), "bootstrap", or "" (no scores)


@dataclass(frozen=True, slots=True)
class Paired:
    """Model a against model b on the n prompts both were scored on: mean of (a − b), its interval, the sign test."""

    a: str
    b: str
    n: int
    diff: float
    diff_ci: tuple[float, float]
    a_better: int  # prompts where a scored higher
    b_better: int
    p_value: float  # exact two-sided sign test on the prompts that differ (McNemar's exact test for 0/1 scores)
    p_holm: float | None = None  # p_value adjusted for all the pairs of the summary (Holm); set by `compare_all`


def score_stats(scores: Sequence[float], *, rounds: int = ROUNDS, seed: int = 0) -> ScoreStats:
    """Mean and 95% interval: Wilson's score interval when every score is 0 or 1, else a percentile bootstrap."""
    x = np.sort(np.asarray(scores, dtype=float))  # sorted: the interval must not depend on the order rows finished in
    n = int(x.size)
    if n == 0:
        return ScoreStats(0, None, None, "")
    mean = float(x.mean())
    if np.isin(x, (0.0, 1.0)).all():
        return ScoreStats(n, mean, wilson(int(x.sum()), n), "wilson")
    return ScoreStats(n, mean, _bootstrap_mean_ci(x, rounds, seed), "bootstrap")


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion (never outside [0, 1]; not a point when all succeed or all fail)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At 0 or n successes a bound is exactly 0 or 1; rounding would leave 0.9999999999999999.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def _bootstrap_mean_ci(x: np.ndarray, rounds: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(rounds, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def sign_test_p(plus: int, minus: int) -> float:
    """Exact two-sided sign test: P(a split at least this uneven | each differing prompt is a fair coin)."""
    n = plus + minus
    if n == 0:
        return 1.0
    k = min(plus, minus)
    # Exact integers, so the tail is not lost to rounding for large n; C(n, i+1) = C(n, i)·(n−i)/(i+1).
    tail, term = 0, 1
    for i in range(k + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    return min(1.0, 2 * tail / (1 << n))


def paired(a: str, b: str, scores_a: Sequence[float], scores_b: Sequence[float], *,
           rounds: int = ROUNDS, seed: int = 0) -> Paired:
    """Compare a and b on the same prompts (scores_a[i] and scores_b[i] are one prompt's)."""
    if len(scores_a) != len(scores_b) or not scores_a:
        raise ValueError("paired scores need the same, non-zero number of prompts")
    d = np.asarray(scores_a, dtype=float) - np.asarray(scores_b, dtype=float)
    plus, minus = int((d > 0).sum()), int((d < 0).sum())
    return Paired(a, b, int(d.size), float(d.mean()), _bootstrap_mean_ci(d, rounds, seed), plus, minus,
                  sign_test_p(plus, minus))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: controls the chance of any false "significant" over all the pairs."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def compare_all(scores: dict[str, dict[str, float]], *, rounds: int = ROUNDS, seed: int = 0) -> list[Paired]:
    """Every two models (in the given order) on the prompts both were scored on; `scores[model][prompt_id]`."""
    names = list(scores)
    found: list[Paired] = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = sorted(p for p in scores[a] if p in scores[b])  # by prompt id: independent of finishing order
            if common:
                found.append(paired(a, b, [scores[a][p] for p in common], [scores[b][p] for p in common],
                                    rounds=rounds, seed=seed))
    adjusted = holm([p.p_value for p in found])
    return [Paired(p.a, p.b, p.n, p.diff, p.diff_ci, p.a_better, p.b_better, p.p_value, q) for p, q in zip(found, adjusted)]
