"""The leaderboard built from stored votes: position-adjusted ratings, honest ranks, the position bias,
style control, votes needed to separate a pair and votes that would have to flip to change #1. No Gradio.

Ratings: Bradley–Terry with a pane-position term (compare/covariates.py), so a pane-A advantage is
never credited to a model; the plain fit (compare/ratings.py) still gives the win matrix and counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from compare.covariates import Battle, CovariateFit, PositionBias, fit_with_covariates, position_bias, style_of
from compare.ranks import Fragility, Separation, flips_to_change_first, rank_label, rank_ranges, separation
from compare.ratings import Leaderboard, Outcome, Vote, leaderboard
from storage.models import VoteRecord

#: Bootstrap resamples behind the leaderboard's 95% intervals.
ROUNDS = 200


def battles_of(record: VoteRecord, *, with_style: bool = False) -> list[Battle]:
    """Pairwise battles from one vote of a 2-4 pane run, each knowing which side sat in pane A (slot 0).

    "slot": the winner beat each other pane; "tie" / "both_bad": every pair tied. Panes of the same
    model (a parameter sweep) are not a battle, and each pair of models counts once per vote.
    """
    models = record.models
    texts = record.texts if with_style and len(record.texts) == len(models) else None
    styles = [style_of(t) for t in texts] if texts is not None else None
    seen: set[frozenset[str]] = set()
    out: list[Battle] = []

    def add(i: int, j: int, outcome: Outcome) -> None:
        pair = frozenset((models[i], models[j]))
        if models[i] == models[j] or pair in seen:
            return
        seen.add(pair)
        position = 1 if i == 0 else -1 if j == 0 else 0
        out.append(Battle(models[i], models[j], outcome, position,
                          styles[i] if styles else (), styles[j] if styles else ()))

    if record.verdict == "slot":
        w = record.winner_slot
        if w is None or not 0 <= w < len(models):
            return []
        for other in range(len(models)):
            if other != w:
                add(w, other, "a")
        return out
    outcome: Outcome = "tie" if record.verdict == "tie" else "both_bad"
    for i in range(len(models)):
        for j in range(i + 1, len(models)):
            add(i, j, outcome)
    return out


@dataclass(frozen=True)
class Board:
    """Everything the Leaderboard sub-tab and the `/leaderboard` API show."""

    #: Position-adjusted ratings, best first (the win matrix and counts are the plain tallies').
    board: Leaderboard
    ranks: dict[str, str]
    position: PositionBias
    #: The pane-A coefficient (log-odds) with its interval; None without any pane-A battle.
    position_coef: tuple[float, float, float] | None
    style: CovariateFit | None
    style_ranks: dict[str, str]
    top_pair: Separation | None
    pair: Separation | None
    fragility: Fragility | None

    def as_dict(self) -> dict[str, Any]:
        """The `/leaderboard` API's result (JSON-ready)."""
        style = self.style
        rows = []
        for r in self.board.ratings:
            row: dict[str, Any] = {"rank": self.ranks[r.model], "model": r.model, "rating": round(r.rating, 1),
                                   "ci": [round(r.ci_low, 1), round(r.ci_high, 1)], "votes": r.votes,
                                   "win_rate": None if r.win_rate is None else round(r.win_rate, 4)}
            if style is not None:
                row["style_rating"] = round(style.rating[r.model], 1)
                row["style_ci"] = [round(style.ci_low[r.model], 1), round(style.ci_high[r.model], 1)]
                row["style_rank"] = self.style_ranks[r.model]
            rows.append(row)
        p = self.position
        return {
            "battles": self.board.total_votes,
            "ratings": rows,
            "position_bias": {"pane_a_share": p.share, "ci": None if p.share is None else [p.ci_low, p.ci_high],
                              "decisive_battles": p.n, "coefficient": None if self.position_coef is None
                              else {"log_odds": self.position_coef[0], "ci": list(self.position_coef[1:])}},
            "style_coefficients": None if style is None else {
                k: {"log_odds": v, "ci": list(style.coefficient_ci[k])} for k, v in style.coefficients.items()
                if k != "position"},
            "top_pair": None if self.top_pair is None else _separation_dict(self.top_pair),
            "pair": None if self.pair is None else _separation_dict(self.pair),
            "flips_to_change_first": None if self.fragility is None else {
                "leader": self.fragility.leader, "challenger": self.fragility.challenger, "flips": self.fragility.flips},
        }


def _separation_dict(s: Separation) -> dict[str, Any]:
    return {"a": s.a, "b": s.b, "win_rate": round(s.win_rate, 4), "votes_needed": s.needed, "decisive_votes": s.have,
            "more_votes": s.more}


def _labels(names: Sequence[str], fit: CovariateFit) -> dict[str, str]:
    ranges = rank_ranges([fit.ci_low[m] for m in names], [fit.ci_high[m] for m in names])
    return {m: rank_label(*r) for m, r in zip(names, ranges, strict=True)}


def _decisive(battles: Sequence[Battle], a: str, b: str) -> int:
    return sum(1 for x in battles if {x.model_a, x.model_b} == {a, b} and x.outcome in ("a", "b"))


def build_board(records: Iterable[VoteRecord], *, rounds: int = ROUNDS, style: bool = False,
                pair: tuple[str, str] | None = None) -> Board:
    """The leaderboard from stored votes (seeded: the same votes, the same board)."""
    records = list(records)
    battles = [b for r in records for b in battles_of(r, with_style=style)]
    votes = [Vote(b.model_a, b.model_b, b.outcome) for b in battles]
    plain = leaderboard(votes, rounds=0)
    fit = fit_with_covariates(battles, position=True, rounds=rounds, seed=0)
    names = fit.models
    by_name = {r.model: r for r in plain.ratings}
    order = sorted(names, key=lambda m: (-fit.rating[m], m))
    rows = [replace(by_name[m], rank=k, rating=fit.rating[m], ci_low=fit.ci_low[m], ci_high=fit.ci_high[m])
            for k, m in enumerate(order, 1)]  # fmt: skip
    board = replace(plain, ratings=rows, rounds=rounds if battles else 0)
    ranks = _labels(names, fit) if names else {}
    bias = position_bias(battles)
    coef = None
    if bias.n:
        lo, hi = fit.coefficient_ci["position"]
        coef = (fit.coefficients["position"], lo, hi)
    styled = fit_with_covariates(battles, position=True, style=True, rounds=rounds // 2, seed=0) if style and names else None
    top = separation(order[0], order[1], fit.rating, _decisive(battles, order[0], order[1])) if len(order) >= 2 else None
    chosen = None
    if pair is not None and pair[0] in fit.rating and pair[1] in fit.rating and pair[0] != pair[1]:
        chosen = separation(pair[0], pair[1], fit.rating, _decisive(battles, *pair))
    # Fragility on the same fit as the ratings shown (a flip keeps the battle's pane position).
    fragility = (flips_to_change_first(battles, order[0], fit=lambda bs: fit_with_covariates(bs, models=names, rounds=0).rating)
                 if len(order) >= 2 and battles else None)
    return Board(board, ranks, bias, coef, styled, _labels(names, styled) if styled else {}, top, chosen, fragility)
