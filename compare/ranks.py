"""Honest ranks, votes needed to separate two models, and votes that would have to flip to change #1.

Ranks (LMArena's rule). A model's best rank is 1 + the number of models whose interval's lower bound
is above its upper bound (models it is surely behind); its worst rank is the number of models minus
those whose upper bound is below its lower bound (models it is surely ahead of). Models whose
intervals overlap share ranks, shown "1–3"; a rank is a single number only when it is certain.

Votes needed (power). Between two models whose win rate (ties excluded) is p, a two-sided test of
p = ½ at level α with power 1 − β needs about
    n = ((z_{1−α/2}·½ + z_{1−β}·√(p(1−p))) / (p − ½))²
decisive votes (the normal approximation to the binomial test; Fleiss, Statistical Methods for Rates
and Proportions, §2). At α = 5%, 80% power: p = 55% → 783, 60% → 194, 65% → 85, 70% → 47.
p is the Bradley–Terry prediction σ((rᵢ − rⱼ)/SCALE), so a pair that never met still gets a figure.

Flips (fragility; cf. arXiv 2508.11847, where removing 2 of 57,477 votes changes #1). For each
challenger, the fewest of the leader's head-to-head wins over it that, turned into losses, put
another model first on a refit (binary search: each flip only helps the challenger). The
answer is the smallest over the challengers (None when no challenger met the leader).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Protocol, TypeVar

from compare.ratings import SCALE, fit_ratings


class _Battle(Protocol):
    @property
    def model_a(self) -> str: ...
    @property
    def model_b(self) -> str: ...
    @property
    def outcome(self) -> str: ...


V = TypeVar("V", bound=_Battle)


def rank_ranges(low: Sequence[float], high: Sequence[float]) -> list[tuple[int, int]]:
    """(best, worst) rank of each model from its interval [low, high]; best == worst when certain."""
    if len(low) != len(high):
        raise ValueError("Each model needs both interval bounds.")
    m = len(low)
    out = []
    for k in range(m):
        above = sum(1 for j in range(m) if j != k and low[j] > high[k])
        below = sum(1 for j in range(m) if j != k and high[j] < low[k])
        out.append((1 + above, m - below))
    return out


def rank_label(best: int, worst: int) -> str:
    """"2" when certain, else "1–3"."""
    return str(best) if best == worst else f"{best}–{worst}"


def expected_win_rate(rating_a: float, rating_b: float) -> float:
    """Bradley–Terry chance that a beats b (ties excluded), from ratings on the Elo-like scale."""
    return 1.0 / (1.0 + math.exp(-(rating_a - rating_b) / SCALE))


def votes_needed(p: float, *, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Decisive votes for a two-sided level-`alpha` test of p = ½ to reject with probability `power`.

    None when p is ½ (no number of votes separates equal models). Symmetric: p and 1 − p need the same.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"A win rate must be strictly between 0 and 1, got {p}.")
    if abs(p - 0.5) < 1e-9:
        return None
    z = NormalDist()
    za, zb = z.inv_cdf(1.0 - alpha / 2.0), z.inv_cdf(power)
    return math.ceil(((za * 0.5 + zb * math.sqrt(p * (1.0 - p))) / (p - 0.5)) ** 2)


@dataclass(frozen=True)
class Separation:
    """How far two models are from being told apart: their predicted win rate, the decisive votes
    needed, the decisive head-to-head votes so far and how many more (None: equal ratings)."""

    a: str
    b: str
    win_rate: float
    needed: int | None
    have: int
    more: int | None


def separation(a: str, b: str, ratings: dict[str, float], decisive: int) -> Separation:
    """`decisive`: the a-vs-b votes that had a winner so far."""
    p = expected_win_rate(ratings[a], ratings[b])
    needed = votes_needed(p)
    return Separation(a, b, p, needed, decisive, None if needed is None else max(0, needed - decisive))


@dataclass(frozen=True)
class Fragility:
    """Flipping `flips` of the leader's wins over `challenger` into losses would put the challenger first."""

    leader: str
    challenger: str | None
    flips: int | None


def flips_to_change_first(votes: Sequence[V], leader: str, *,
                          fit: Callable[[list[V]], dict[str, float]] | None = None) -> Fragility:
    """The fewest flipped votes (the leader's head-to-head wins turned into losses) that change who is first.

    `votes` are `Vote`s or anything with model_a, model_b and outcome (a dataclass: a flip replaces its
    outcome and keeps the rest, such as the pane position); `fit` gives the ratings (default: plain BT).
    """
    refit: Callable[[list[V]], dict[str, float]] = fit or (lambda vs: fit_ratings(vs))  # type: ignore[arg-type]
    best: tuple[int, str] | None = None
    others = sorted({m for v in votes for m in (v.model_a, v.model_b)} - {leader})
    for challenger in others:
        wins = [k for k, v in enumerate(votes) if (v.model_a, v.model_b, v.outcome) in
                ((leader, challenger, "a"), (challenger, leader, "b"))]
        if not wins or (best is not None and best[0] == 1):
            continue

        def overtakes(k: int, wins: list[int] = wins) -> bool:
            flipped = set(wins[:k])
            changed = [replace(v, outcome="b" if v.outcome == "a" else "a") if i in flipped else v  # type: ignore[type-var]
                       for i, v in enumerate(votes)]
            r = refit(changed)
            return max(r, key=lambda m: (r[m], m == leader)) != leader  # a tie at the top keeps the leader

        if not overtakes(len(wins)):
            continue
        lo, hi = 1, len(wins)  # smallest k with overtakes(k): monotone in k
        while lo < hi:
            mid = (lo + hi) // 2
            if overtakes(mid):
                hi = mid
            else:
                lo = mid + 1
        if best is None or lo < best[0]:
            best = (lo, challenger)
    if best is None:
        return Fragility(leader, None, None)
    return Fragility(leader, best[1], best[0])
