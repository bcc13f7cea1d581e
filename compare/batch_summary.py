"""A batch run's summary per model: done, errors, p50/p95 time to first token, tokens per second, tokens, cost;
for scored prompts, each model's mean score with its 95% interval and paired comparisons (compare/paired.py)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from compare.paired import Paired, compare_all, score_stats

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """Per-model numbers over the latest row of each pair. Latency figures use successful rows only."""

    model: str
    done: int
    errors: int
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    tokens_per_second_median: float | None
    input_tokens: int
    output_tokens: int
    cost: float | None  # sum of the known costs; None when none is known
    cost_unknown: int  # rows whose cost is unknown (unpriced model or missing usage)
    scored: int = 0  # successful replies to prompts with checks
    score_mean: float | None = None  # mean share of checks passed over them
    score_ci: tuple[float, float] | None = None  # its 95% interval (compare/paired.py's score_stats)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class BatchSummary:
    """What a batch produced. The run_* fields describe the last run (zero from `summarize`)."""

    models: list[ModelSummary]
    pairs: int = 0  # prompt × model pairs in the job
    skipped: int = 0  # already finished before this run
    ran: int = 0  # turns run now
    retried: int = 0  # of which ran again because the output held only error rows for them
    run_errors: int = 0  # of which failed
    ignored_lines: int = 0  # unreadable lines found in the output file
    elapsed_s: float | None = None
    out_path: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)  # latest row per pair
    paired: list[Paired] = field(default_factory=list)  # every two scored models on their common prompts

    @property
    def errors(self) -> int:
        return sum(m.errors for m in self.models)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rows")
        for m, src in zip(d["models"], self.models):
            m["total_tokens"] = src.total_tokens
        return d

    def to_json(self) -> dict[str, Any]:
        """The `--summary FILE.json` document: `as_dict` with models keyed by name, each with n/score_mean/score_ci."""
        d = self.as_dict()
        d["models"] = {m["model"]: {"n": m["scored"], **m} for m in d["models"]}
        for m in d["models"].values():
            m["score_ci"] = list(m["score_ci"]) if m["score_ci"] is not None else None
        d["paired"] = [{**p, "diff_ci": list(p["diff_ci"])} for p in d["paired"]]
        return d

    def to_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame([{**asdict(m), "total_tokens": m.total_tokens} for m in self.models])

    def to_markdown(self) -> str:
        """The per-model table as markdown."""
        head = "| model | done | errors | TTFT p50 (ms) | TTFT p95 (ms) | tok/s (median) | tokens in / out | cost (USD) |"
        lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for m in self.models:
            lines.append(
                f"| {m.model} | {m.done} | {m.errors} | {_fmt(m.ttft_p50_ms, 0)} | {_fmt(m.ttft_p95_ms, 0)} | "
                f"{_fmt(m.tokens_per_second_median, 1)} | {m.input_tokens:,} / {m.output_tokens:,} | {_fmt_cost(m)} |"
            )
        scored = [m for m in self.models if m.scored]
        if scored:
            lines += ["", "| model | scored | mean score | 95% interval |", "|---|---:|---:|---|"]
            lines += [f"| {m.model} | {m.scored} | {_fmt(m.score_mean, 3)} | {_fmt_ci(m.score_ci)} |" for m in scored]
        if self.paired:
            lines += ["", "| a − b | prompts | mean difference | 95% interval | a better / b better | p (sign test) | p (Holm) |",
                      "|---|---:|---:|---|---:|---:|---:|"]
            lines += [f"| {p.a} − {p.b} | {p.n} | {p.diff:+.3f} | {_fmt_ci(p.diff_ci, signed=True)} | "
                      f"{p.a_better} / {p.b_better} | {_fmt_p(p.p_value)} | {_fmt_p(p.p_holm)} |" for p in self.paired]
        return "\n".join(lines)


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _fmt_ci(ci: tuple[float, float] | None, *, signed: bool = False) -> str:
    if ci is None:
        return "–"
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if signed else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _fmt_p(p: float | None) -> str:
    return "–" if p is None else "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def _fmt_cost(m: ModelSummary) -> str:
    if m.cost is None:
        return "unknown"
    text = "$0" if m.cost == 0 else f"${m.cost:.4f}" if m.cost < 100 else f"${m.cost:,.2f}"
    return f"{text} (+{m.cost_unknown} unpriced)" if m.cost_unknown else text


def _numbers(rows: Iterable[Mapping[str, Any]], key: str) -> np.ndarray:
    values = [r.get(key) for r in rows]
    return np.array([float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
                     and math.isfinite(v)], dtype=float)


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


def summarize(rows: Iterable[Mapping[str, Any]], *, models: Sequence[str] | None = None) -> BatchSummary:
    """Per-model numbers from result rows (the latest row per pair counts); `models` fixes the order."""
    latest = latest_rows(rows)
    names = list(dict.fromkeys([*(models or ()), *(str(r.get("model")) for r in latest)]))
    out = []
    scores: dict[str, dict[str, float]] = {}
    for name in names:
        mine = [r for r in latest if str(r.get("model")) == name]
        ok = [r for r in mine if r.get("error") is None]
        ttft = _numbers(ok, "ttft_ms")
        tps = _numbers(ok, "tokens_per_second")
        costs = [r.get("cost") for r in mine]
        known = [float(c) for c in costs if isinstance(c, (int, float))]
        mine_scores = {str(r.get("prompt_id")): float(r["score"]) for r in ok if _is_score(r.get("score"))}
        if mine_scores:
            scores[name] = mine_scores
        stats = score_stats(list(mine_scores.values()))
        out.append(ModelSummary(
            model=name,
            done=len(ok),
            errors=len(mine) - len(ok),
            ttft_p50_ms=_percentile(ttft, 50),
            ttft_p95_ms=_percentile(ttft, 95),
            tokens_per_second_median=_percentile(tps, 50),
            input_tokens=int(_numbers(mine, "input_tokens").sum()),
            output_tokens=int(_numbers(mine, "output_tokens").sum()),
            cost=sum(known) if known else None,
            cost_unknown=len(costs) - len(known),
            scored=stats.n,
            score_mean=stats.mean,
            score_ci=stats.ci,
        ))
    return BatchSummary(models=out, pairs=len(latest), rows=latest, paired=compare_all(scores))


def _is_score(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1


# -- running --------------------------------------------------------------------------------------


def latest_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (prompt_id, model): the last one (a resumed run appends the retry after the failure)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (str(r.get("prompt_id")), str(r.get("model")))
        latest.pop(key, None)  # keep file order of the surviving rows
        latest[key] = dict(r)
    return list(latest.values())
