"""Leaderboard math: Bradley–Terry ratings from pairwise votes, bootstrap intervals, win rates.

Model. Each vote is a battle between two models. Bradley–Terry says model i beats model j with
probability σ(θᵢ − θⱼ). Ties ("tie" and "both_bad") count as half a win for each side, the
convention Chatbot Arena uses: the likelihood becomes Σ wᵢⱼ·log σ(θᵢ − θⱼ) with fractional win
counts wᵢⱼ, which keeps one parameter per model and matches the win-rate and win-matrix numbers
shown next to the ratings. (Rao–Kupper / Davidson would add a tie parameter; with few votes it is
poorly determined and it does not change the order.)

Fit. Maximum a posteriori by damped Newton steps (the objective is strictly concave), with a weak
Gaussian prior θ ~ N(0, 1/l2) so a model that won every battle gets a large but finite rating and
models with no votes stay at the mean. The prior also pins the scale's origin: at the optimum
Σθ = 0, so the mean rating is exactly `BASE`.

Scale. rating = BASE + SCALE·θ with SCALE = 400/ln 10: a 400-point gap means 10:1 odds, as in Elo.

Intervals. The votes are resampled with replacement (`rounds` times, seeded) and refitted; the
interval is the 2.5th–97.5th percentile of each model's rating. All rounds are fitted at once,
as one batch of small Newton problems, so 200 rounds cost about as much as a few single fits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

import numpy as np

from chat.errors import InvalidInput

if TYPE_CHECKING:
    import pandas as pd

Outcome = Literal["a", "b", "tie", "both_bad"]
OUTCOMES: tuple[str, ...] = ("a", "b", "tie", "both_bad")


#: The same result seen from the other side (model_b first).
_SWAPPED: dict[Outcome, Outcome] = {"a": "b", "b": "a", "tie": "tie", "both_bad": "both_bad"}


def is_outcome(value: object) -> TypeGuard[Outcome]:
    """Whether `value` is one of OUTCOMES."""
    return value in OUTCOMES

BASE = 1000.0
SCALE = 400.0 / math.log(10.0)  # rating points per unit of log-odds
DEFAULT_L2 = 0.1  # prior sd of θ ≈ 3.2 log-odds ≈ 550 rating points: weak next to any real data
DEFAULT_ROUNDS = 200

FRAME_COLUMNS = ["rank", "model", "rating", "ci_low", "ci_high", "votes", "win_rate"]


class RatingsError(InvalidInput, ValueError):
    """Votes the leaderboard cannot use; the message names the bad vote. (A ValueError too, for plain callers.)"""


@dataclass(frozen=True, slots=True)
class Vote:
    """One battle: `outcome` is "a" (model_a won), "b", "tie" or "both_bad" (counted as a tie)."""

    model_a: str
    model_b: str
    outcome: Outcome


VoteLike = Vote | tuple[str, str, str] | Mapping[str, Any]


def best_of(models: Sequence[str], winner: str) -> list[Vote]:
    """Pairwise votes from a "pick the best of N" vote.

    `winner` is one of `models` (it beats each of the others; the others are not compared with each
    other), or "tie" / "both_bad" (every pair is a tie).
    """
    names = list(models)
    if len(names) < 2:
        raise RatingsError("A vote needs at least two models.")
    if len(set(names)) != len(names):
        raise RatingsError(f"A vote lists a model twice: {', '.join(names)}.")
    if winner in ("tie", "both_bad"):
        draw: Outcome = "tie" if winner == "tie" else "both_bad"
        return [Vote(a, b, draw) for k, a in enumerate(names) for b in names[k + 1:]]
    if winner not in names:
        raise RatingsError(f"The winner '{winner}' is not one of the models voted on ({', '.join(names)}).")
    return [Vote(winner, other, "a") for other in names if other != winner]


def as_vote(item: VoteLike, index: int | None = None) -> Vote:
    """A validated `Vote` from a Vote, an (a, b, outcome) tuple or a mapping with those keys."""
    where = f"Vote #{index + 1}" if index is not None else "A vote"
    a: object
    b: object
    outcome: object  # checked below, whatever shape the vote came in
    if isinstance(item, Vote):
        a, b, outcome = item.model_a, item.model_b, item.outcome
    elif isinstance(item, Mapping):
        try:
            a, b, outcome = item["model_a"], item["model_b"], item["outcome"]
        except KeyError as e:
            raise RatingsError(f"{where} has no '{e.args[0]}' (expected model_a, model_b, outcome).") from e
    elif isinstance(item, (tuple, list)) and len(item) == 3:
        a, b, outcome = item
    else:
        raise RatingsError(f"{where} is not a Vote, an (a, b, outcome) tuple or a mapping: {item!r}.")
    if not isinstance(a, str) or not isinstance(b, str) or not a or not b:
        raise RatingsError(f"{where} needs two model names, got {a!r} and {b!r}.")
    if a == b:
        raise RatingsError(f"{where} compares '{a}' with itself; a vote needs two different models.")
    if not is_outcome(outcome):
        raise RatingsError(f"{where} has outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}.")
    return Vote(a, b, outcome)


@dataclass(frozen=True, slots=True)
class ModelRating:
    """One leaderboard row. `wins` counts ties as half; `win_rate` is None without votes."""

    rank: int
    model: str
    rating: float
    ci_low: float
    ci_high: float
    votes: int
    wins: float
    ties: int
    win_rate: float | None


@dataclass(frozen=True)
class Leaderboard:
    """Ratings best first, plus the pairwise tables they came from."""

    ratings: list[ModelRating]
    #: win_matrix[a][b]: share of a-vs-b battles a won (ties half); None when they never met or a == b.
    win_matrix: dict[str, dict[str, float | None]]
    #: battles[a][b]: how many a-vs-b battles there were (symmetric).
    battles: dict[str, dict[str, int]]
    total_votes: int
    rounds: int
    confidence: float
    l2: float

    @property
    def models(self) -> list[str]:
        return [r.model for r in self.ratings]

    def rating_of(self, model: str) -> ModelRating:
        for r in self.ratings:
            if r.model == model:
                return r
        raise KeyError(model)

    def to_frame(self, *, decimals: int | None = 0) -> pd.DataFrame:
        """Display table: rank, model, rating, ci_low, ci_high, votes, win_rate (NaN when unknown)."""
        import pandas as pd

        rows = [
            {"rank": r.rank, "model": r.model, "rating": r.rating, "ci_low": r.ci_low, "ci_high": r.ci_high,
             "votes": r.votes, "win_rate": r.win_rate if r.win_rate is not None else float("nan")}
            for r in self.ratings
        ]
        frame = pd.DataFrame(rows, columns=FRAME_COLUMNS)
        frame = frame.astype({"rank": "int64", "votes": "int64", "rating": "float64", "ci_low": "float64",
                              "ci_high": "float64", "win_rate": "float64"})
        if decimals is not None:
            frame[["rating", "ci_low", "ci_high"]] = frame[["rating", "ci_low", "ci_high"]].round(decimals)
            frame["win_rate"] = frame["win_rate"].round(3)
        return frame

    def win_matrix_frame(self) -> pd.DataFrame:
        """The win matrix as a square table (rows: the model, columns: its opponent), in leaderboard order."""
        import pandas as pd

        order = self.models
        data = [[np.nan if self.win_matrix[a][b] is None else self.win_matrix[a][b] for b in order] for a in order]
        return pd.DataFrame(data, index=pd.Index(order, name="model"), columns=order, dtype="float64")


# -- fitting ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tallies:
    """Votes reduced to counts per unordered pair (i < j): i won, j won, tie."""

    models: list[str]
    pair_i: np.ndarray  # (P,) int
    pair_j: np.ndarray  # (P,) int
    counts: np.ndarray  # (P, 3) float: [i won, j won, tie]

    @property
    def total(self) -> int:
        return int(self.counts.sum())


def _tally(votes: Iterable[VoteLike], models: Sequence[str] | None) -> _Tallies:
    checked = [as_vote(v, k) for k, v in enumerate(votes)]
    names: list[str] = list(dict.fromkeys(models or ()))
    index = {m: k for k, m in enumerate(names)}
    for v in checked:
        for m in (v.model_a, v.model_b):
            if m not in index:
                index[m] = len(names)
                names.append(m)
    cells: dict[tuple[int, int], list[float]] = {}
    for v in checked:
        i, j = index[v.model_a], index[v.model_b]
        outcome = v.outcome
        if i > j:  # store each pair once, lower index first
            i, j = j, i
            outcome = _SWAPPED[outcome]
        c = cells.setdefault((i, j), [0.0, 0.0, 0.0])
        c[0 if outcome == "a" else 1 if outcome == "b" else 2] += 1
    keys = sorted(cells)
    return _Tallies(
        models=names,
        pair_i=np.array([k[0] for k in keys], dtype=np.int64),
        pair_j=np.array([k[1] for k in keys], dtype=np.int64),
        counts=np.array([cells[k] for k in keys], dtype=np.float64).reshape(len(keys), 3),
    )


def _matrices(t: _Tallies, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Win and battle matrices, shape (B, m, m), from per-pair counts of shape (B, P, 3)."""
    b, m = counts.shape[0], len(t.models)
    wins = np.zeros((b, m, m))
    battles = np.zeros((b, m, m))
    i, j = t.pair_i, t.pair_j
    half_ties = 0.5 * counts[:, :, 2]
    wins[:, i, j] = counts[:, :, 0] + half_ties
    wins[:, j, i] = counts[:, :, 1] + half_ties
    total = counts.sum(axis=2)
    battles[:, i, j] = total
    battles[:, j, i] = total
    return wins, battles


def _objective(theta: np.ndarray, wins: np.ndarray, l2: float) -> np.ndarray:
    diff = theta[:, :, None] - theta[:, None, :]
    log_p = -np.logaddexp(0.0, -diff)  # log σ(θi − θj), stable for large gaps
    objective: np.ndarray = (wins * log_p).sum(axis=(1, 2)) - 0.5 * l2 * (theta**2).sum(axis=1)
    return objective


def _fit(wins: np.ndarray, battles: np.ndarray, l2: float, *, tol: float = 1e-9, max_iter: int = 100) -> np.ndarray:
    """MAP log-strengths θ, shape (B, m), for a batch of win/battle matrices (damped Newton, line search)."""
    if l2 <= 0:
        raise RatingsError("The prior strength l2 must be positive (it keeps unbeaten models finite).")
    b, m, _ = wins.shape
    theta = np.zeros((b, m))
    eye = np.eye(m)
    f = _objective(theta, wins, l2)
    for _ in range(max_iter):
        diff = theta[:, :, None] - theta[:, None, :]
        p = 1.0 / (1.0 + np.exp(-diff))
        grad = (wins - battles * p).sum(axis=2) - l2 * theta
        v = battles * p * (1.0 - p)
        neg_hess = -v + v.sum(axis=2)[:, :, None] * eye + l2 * eye  # −H: positive definite
        step = np.linalg.solve(neg_hess, grad[:, :, None])[:, :, 0]
        # Cap very long first steps (a model that always wins), then backtrack until the objective rises.
        biggest = np.abs(step).max(axis=1, keepdims=True)
        step = step * np.minimum(1.0, 4.0 / np.maximum(biggest, 1e-300))
        t = np.ones((b, 1))
        new_theta = theta + step
        new_f = _objective(new_theta, wins, l2)
        for _ in range(40):
            worse = new_f < f - 1e-12 * (1.0 + np.abs(f))
            if not worse.any():
                break
            t[worse] *= 0.5
            new_theta = theta + t * step
            new_f = _objective(new_theta, wins, l2)
        moved = np.abs(new_theta - theta).max()
        theta, f = new_theta, new_f
        if moved < tol:
            break
    return theta


def fit_ratings(votes: Iterable[VoteLike], *, models: Sequence[str] | None = None, l2: float = DEFAULT_L2) -> dict[str, float]:
    """Bradley–Terry ratings on the Elo-like scale (mean `BASE`), without intervals."""
    t = _tally(votes, models)
    if not t.models:
        return {}
    wins, battles = _matrices(t, t.counts[None])
    theta = _fit(wins, battles, l2)[0]
    return {m: float(BASE + SCALE * theta[k]) for k, m in enumerate(t.models)}


def leaderboard(
    votes: Iterable[VoteLike],
    *,
    models: Sequence[str] | None = None,
    rounds: int = DEFAULT_ROUNDS,
    seed: int | None = 0,
    confidence: float = 0.95,
    l2: float = DEFAULT_L2,
) -> Leaderboard:
    """Ratings with bootstrap intervals, win rates, vote counts and the pairwise win matrix.

    `models` lists models to show even without votes (they sit at `BASE`); others are added as they
    appear in the votes. `rounds=0` skips the bootstrap (the interval is then the rating itself).
    No votes and no models give an empty leaderboard.
    """
    if rounds < 0:
        raise RatingsError("The number of bootstrap rounds cannot be negative.")
    if not 0 < confidence < 1:
        raise RatingsError(f"The confidence level must be between 0 and 1, got {confidence}.")
    t = _tally(votes, models)
    names, m = t.models, len(t.models)
    if m == 0:
        return Leaderboard([], {}, {}, 0, rounds, confidence, l2)

    wins, battles = _matrices(t, t.counts[None])
    theta = _fit(wins, battles, l2)[0]
    rating = BASE + SCALE * theta

    n = t.total
    if rounds > 0 and n > 0:
        # Resampling n votes with replacement = a multinomial draw over the distinct (pair, outcome) cells.
        rng = np.random.default_rng(seed)
        flat = t.counts.reshape(-1)
        draws = rng.multinomial(n, flat / n, size=rounds).reshape(rounds, *t.counts.shape).astype(np.float64)
        boot_wins, boot_battles = _matrices(t, draws)
        boot = BASE + SCALE * _fit(boot_wins, boot_battles, l2)
        tail = (1.0 - confidence) / 2.0 * 100.0
        low, high = np.percentile(boot, [tail, 100.0 - tail], axis=0)
    else:
        low, high = rating.copy(), rating.copy()

    w, nb = wins[0], battles[0]
    win_total = w.sum(axis=1)
    vote_total = nb.sum(axis=1)
    tie_total = np.zeros(m)
    np.add.at(tie_total, t.pair_i, t.counts[:, 2])
    np.add.at(tie_total, t.pair_j, t.counts[:, 2])

    order = sorted(range(m), key=lambda k: (-rating[k], names[k]))
    rows = []
    for rank, k in enumerate(order, 1):
        votes_k = int(vote_total[k])
        rows.append(ModelRating(
            rank=rank,
            model=names[k],
            rating=float(rating[k]),
            # The point estimate is not always inside a percentile interval when votes are few; widen to show it.
            ci_low=float(min(low[k], rating[k])),
            ci_high=float(max(high[k], rating[k])),
            votes=votes_k,
            wins=float(win_total[k]),
            ties=int(tie_total[k]),
            win_rate=float(win_total[k] / votes_k) if votes_k else None,
        ))
    matrix = {a: {b: (None if a == b or nb[i, j] == 0 else float(w[i, j] / nb[i, j])) for j, b in enumerate(names)}
              for i, a in enumerate(names)}
    counts = {a: {b: int(nb[i, j]) for j, b in enumerate(names)} for i, a in enumerate(names)}
    return Leaderboard(rows, matrix, counts, n, rounds if n > 0 else 0, confidence, l2)
