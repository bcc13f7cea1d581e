"""Bradley–Terry with covariates: the pane-position term and style control, and the position bias.

Model. Each battle i-vs-j is one row of a logistic regression: P(i wins) = σ(θᵢ − θⱼ + γ·x), where
x holds the battle's covariates seen from i's side:

- position: +1 when model i sat in pane A (the first, left pane), −1 when model j did, 0 when
  neither did (a 3-4 pane run's B-vs-C pair). γ_pos is the log-odds a pane gains by being A. Since
  every comparison puts its models in a random order, fitting γ_pos keeps a pane-A advantage from
  being credited to whichever model happened to sit there more often.
- style (optional; LMArena's "style control", Chiang et al. / lmsys blog 2024-08-28): for the reply
  length and the counts of markdown headers, list items and bold spans, the normalised difference
  (fᵢ − fⱼ)/(fᵢ + fⱼ) (0 when both are 0), each column then divided by its standard deviation.
  The θ are then "ratings with style held equal".

Ties count half a win for each side (the same convention as compare/ratings.py). Fit: MAP by Newton
with the same weak prior on θ as ratings.py and on γ (l2 = 0.1 on standardised covariates is weak).
Intervals: the battles are resampled with replacement `rounds` times (seeded) and refitted in one
batch; the interval is the percentile interval, as in ratings.py.

Position bias: among decisive battles where one side sat in pane A, the share pane A won, with a
Wilson score interval (Wilson 1927).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from compare.ratings import BASE, DEFAULT_L2, SCALE, Outcome, RatingsError

STYLE_FEATURES: tuple[str, ...] = ("length", "headers", "lists", "bold")

_HEADER = re.compile(r"^\s{0,3}#{1,6}\s+\S", re.MULTILINE)
_LIST = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+\S", re.MULTILINE)
_BOLD = re.compile(r"\*\*[^*\n]+\*\*|__[^_\n]+__")


def style_of(text: str) -> tuple[float, float, float, float]:
    """A reply's style counts: characters, markdown headers, list items, bold spans."""
    return (float(len(text)), float(len(_HEADER.findall(text))), float(len(_LIST.findall(text))),
            float(len(_BOLD.findall(text))))


@dataclass(frozen=True, slots=True)
class Battle:
    """One pairwise battle with what the covariates need.

    `position`: +1 when model_a sat in pane A, −1 when model_b did, 0 when neither.
    `style_a` / `style_b`: the replies' `style_of` counts (empty when the texts are unknown).
    """

    model_a: str
    model_b: str
    outcome: Outcome
    position: int = 0
    style_a: tuple[float, ...] = ()
    style_b: tuple[float, ...] = ()


@dataclass(frozen=True)
class PositionBias:
    """How often pane A won its decisive battles: share with its Wilson interval, over `n` battles."""

    n: int
    wins: int
    share: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class CovariateFit:
    """Ratings (Elo-like scale, mean BASE) with intervals, and the covariates' coefficients (log-odds)."""

    models: list[str]
    rating: dict[str, float]
    ci_low: dict[str, float]
    ci_high: dict[str, float]
    #: coefficient per covariate name ("position", "length", ...), log-odds per unit (style: per sd).
    coefficients: dict[str, float] = field(default_factory=dict)
    coefficient_ci: dict[str, tuple[float, float]] = field(default_factory=dict)


def wilson(wins: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial share (better than the normal one near 0, 1 and for small n)."""
    if n <= 0:
        raise RatingsError("A share needs at least one trial.")
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def position_bias(battles: Sequence[Battle]) -> PositionBias:
    """The share of decisive battles with a pane-A side that pane A won (None without any)."""
    n = wins = 0
    for b in battles:
        if b.position == 0 or b.outcome not in ("a", "b"):
            continue
        n += 1
        wins += (b.outcome == "a") == (b.position == 1)
    if n == 0:
        return PositionBias(0, 0, None, None, None)
    low, high = wilson(wins, n)
    return PositionBias(n, wins, wins / n, low, high)


def _style_columns(battles: Sequence[Battle]) -> np.ndarray:
    """Normalised, standardised style differences (n, 4); a battle without texts gets zeros."""
    out = np.zeros((len(battles), len(STYLE_FEATURES)))
    for r, b in enumerate(battles):
        if len(b.style_a) != len(STYLE_FEATURES) or len(b.style_b) != len(STYLE_FEATURES):
            continue
        for k, (fa, fb) in enumerate(zip(b.style_a, b.style_b, strict=True)):
            total = fa + fb
            out[r, k] = 0.0 if total <= 0 else (fa - fb) / total
    sd = out.std(axis=0)
    # A constant column (no headers anywhere, say) carries no information: leave it at 0.
    return np.where(sd > 0, out / np.where(sd > 0, sd, 1.0), 0.0)


def _design(battles: Sequence[Battle], names: list[str], *, position: bool, style: bool
            ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    index = {m: k for k, m in enumerate(names)}
    m = len(names)
    extra: list[str] = (["position"] if position else []) + (list(STYLE_FEATURES) if style else [])
    x = np.zeros((len(battles), m + len(extra)))
    y = np.empty(len(battles))
    rows = np.arange(len(battles))
    x[rows, [index[b.model_a] for b in battles]] = 1.0
    x[rows, [index[b.model_b] for b in battles]] = -1.0
    col = m
    if position:
        x[:, col] = [b.position for b in battles]
        col += 1
    if style:
        x[:, col:col + len(STYLE_FEATURES)] = _style_columns(battles)
    for r, b in enumerate(battles):
        y[r] = 1.0 if b.outcome == "a" else 0.0 if b.outcome == "b" else 0.5
    return x, y, extra


def _fit(x: np.ndarray, y: np.ndarray, weights: np.ndarray, l2: float, *, tol: float = 1e-9, max_iter: int = 60) -> np.ndarray:
    """MAP coefficients, shape (B, d), for a batch of battle weightings (B, n): Newton with step halving."""
    b, d = weights.shape[0], x.shape[1]
    beta = np.zeros((b, d))
    eye = np.eye(d)

    def objective(beta: np.ndarray) -> np.ndarray:
        z = beta @ x.T  # (B, n)
        ll = y * -np.logaddexp(0.0, -z) + (1 - y) * -np.logaddexp(0.0, z)
        value: np.ndarray = (weights * ll).sum(axis=1) - 0.5 * l2 * (beta**2).sum(axis=1)
        return value

    f = objective(beta)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(beta @ x.T)))
        grad = (weights * (y - p)) @ x - l2 * beta
        w = weights * p * (1 - p)
        neg_hess = np.einsum("bn,nd,ne->bde", w, x, x) + l2 * eye
        step = np.linalg.solve(neg_hess, grad[:, :, None])[:, :, 0]
        step *= np.minimum(1.0, 4.0 / np.maximum(np.abs(step).max(axis=1, keepdims=True), 1e-300))
        t = np.ones((b, 1))
        new = beta + step
        new_f = objective(new)
        for _ in range(40):
            worse = new_f < f - 1e-12 * (1.0 + np.abs(f))
            if not worse.any():
                break
            t[worse] *= 0.5
            new = beta + t * step
            new_f = objective(new)
        moved = np.abs(new - beta).max()
        beta, f = new, new_f
        if moved < tol:
            break
    return beta


def fit_with_covariates(
    battles: Sequence[Battle],
    *,
    models: Sequence[str] | None = None,
    position: bool = True,
    style: bool = False,
    rounds: int = 100,
    seed: int | None = 0,
    confidence: float = 0.95,
    l2: float = DEFAULT_L2,
) -> CovariateFit:
    """Bradley–Terry ratings with a position term and (optionally) style covariates, with bootstrap intervals."""
    if rounds < 0:
        raise RatingsError("The number of bootstrap rounds cannot be negative.")
    names = list(dict.fromkeys([*(models or ()), *(m for b in battles for m in (b.model_a, b.model_b))]))
    if not names:
        return CovariateFit([], {}, {}, {})
    m = len(names)
    if not battles:
        flat = dict.fromkeys(names, BASE)
        return CovariateFit(names, flat, dict(flat), dict(flat))
    x, y, extra = _design(battles, names, position=position, style=style)
    n = len(battles)
    point = _fit(x, y, np.ones((1, n)), l2)[0]
    if rounds > 0:
        rng = np.random.default_rng(seed)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=rounds).astype(np.float64)
        boot = _fit(x, y, weights, l2)
        boot[:, :m] -= boot[:, :m].mean(axis=1, keepdims=True)  # each resample on the same origin
        tail = (1.0 - confidence) / 2.0 * 100.0
        low, high = np.percentile(boot, [tail, 100.0 - tail], axis=0)
    else:
        low, high = point.copy(), point.copy()
    # With l2 on θ the fitted θ sum to ~0 already; centre exactly so the mean rating is BASE.
    shift = point[:m].mean()
    if rounds > 0:
        low[:m] += shift
        high[:m] += shift
    rating = {name: float(BASE + SCALE * (point[k] - shift)) for k, name in enumerate(names)}
    ci_low = {name: float(min(BASE + SCALE * (low[k] - shift), rating[name])) for k, name in enumerate(names)}
    ci_high = {name: float(max(BASE + SCALE * (high[k] - shift), rating[name])) for k, name in enumerate(names)}
    coefs = {c: float(point[m + k]) for k, c in enumerate(extra)}
    coef_ci = {c: (float(low[m + k]), float(high[m + k])) for k, c in enumerate(extra)}
    return CovariateFit(names, rating, ci_low, ci_high, coefs, coef_ci)
