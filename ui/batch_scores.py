"""The batch tab's scores: each model's mean score with its 95% interval (a table and a plot) and the paired comparisons.

Formatting only: the numbers are compare/batch_summary.py's (compare/paired.py's statistics).
"""

from __future__ import annotations

import html

import pandas as pd

from compare.batch import BatchSummary

SCORE_COLUMNS = ["Model", "Scored", "Mean score", "95% interval"]
PAIRED_COLUMNS = ["A", "B", "Prompts", "Mean A − B", "95% interval", "A better / B better", "p (sign test)",
                  "p (Holm)", "Verdict"]
ALPHA = 0.05


def has_scores(summary: BatchSummary) -> bool:
    """Whether any reply of the run was scored (its prompt had a reference or checks)."""
    return any(m.scored for m in summary.models)


def _ci(ci: tuple[float, float] | None, signed: bool = False) -> str:
    if ci is None:
        return ""
    return f"{ci[0]:+.3f} to {ci[1]:+.3f}" if signed else f"{ci[0]:.3f} to {ci[1]:.3f}"


def _p(p: float | None) -> str:
    return "" if p is None else "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def scores_frame(summary: BatchSummary) -> pd.DataFrame:
    rows = [{"Model": m.model, "Scored": m.scored,
             "Mean score": None if m.score_mean is None else round(m.score_mean, 3), "95% interval": _ci(m.score_ci)}
            for m in summary.models if m.scored]
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def verdict(a: str, b: str, p_holm: float | None, p_value: float, diff: float) -> str:
    """Plain words for one pair; Holm's p when there are several pairs, so that 15 pairs do not make a false winner."""
    p = p_holm if p_holm is not None else p_value
    if p >= ALPHA or diff == 0:
        return "no significant difference"
    return f"{a if diff > 0 else b} better (p < {ALPHA})"


def paired_frame(summary: BatchSummary) -> pd.DataFrame:
    rows = [{"A": p.a, "B": p.b, "Prompts": p.n, "Mean A − B": round(p.diff, 3), "95% interval": _ci(p.diff_ci, True),
             "A better / B better": f"{p.a_better} / {p.b_better}", "p (sign test)": _p(p.p_value),
             "p (Holm)": _p(p.p_holm), "Verdict": verdict(p.a, p.b, p.p_holm, p.p_value, p.diff)}
            for p in summary.paired]
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def scores_plot(summary: BatchSummary) -> str:
    """An SVG: per scored model, its name, a line across its 95% interval and a dot at its mean, on a 0–1 axis.

    Labels sit above each line, not beside it, so the plot keeps its width on a phone; colours follow the
    theme (currentColor and the accent), so it reads in light and dark mode.
    """
    scored = [m for m in summary.models if m.scored and m.score_mean is not None]
    if not scored:
        return ""
    left, width, row = 12, 576, 44
    height = row * len(scored) + 34

    def x(v: float) -> float:
        return left + width * min(max(v, 0.0), 1.0)

    parts = []
    described = []
    for k, m in enumerate(scored):
        assert m.score_mean is not None
        lo, hi = m.score_ci or (m.score_mean, m.score_mean)
        y = row * k + 30
        name = html.escape(m.model)
        described.append(f"{m.model}: {m.score_mean:.3f} ({_ci(m.score_ci)}), {m.scored} scored")
        parts.append(
            f'<text x="{left}" y="{y - 10}" font-size="13" fill="currentColor">{name} · {m.score_mean:.3f}'
            f' <tspan opacity="0.7">[{lo:.2f}, {hi:.2f}] n={m.scored}</tspan></text>'
            f'<line x1="{x(lo):.1f}" x2="{x(hi):.1f}" y1="{y}" y2="{y}" stroke="currentColor" stroke-width="2"/>'
            f'<line x1="{x(lo):.1f}" x2="{x(lo):.1f}" y1="{y - 5}" y2="{y + 5}" stroke="currentColor" stroke-width="2"/>'
            f'<line x1="{x(hi):.1f}" x2="{x(hi):.1f}" y1="{y - 5}" y2="{y + 5}" stroke="currentColor" stroke-width="2"/>'
            f'<circle cx="{x(m.score_mean):.1f}" cy="{y}" r="5" style="fill: var(--color-accent, #f97316)"/>'
        )
    axis_y = row * len(scored) + 12
    ticks = "".join(
        f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="8" y2="{axis_y}" stroke="currentColor" stroke-opacity="0.15"/>'
        f'<text x="{x(t):.1f}" y="{axis_y + 16}" font-size="12" text-anchor="middle" fill="currentColor">{t:g}</text>'
        for t in (0, 0.25, 0.5, 0.75, 1))
    label = html.escape("Mean score with 95% interval. " + "; ".join(described), quote=True)
    return (f'<svg viewBox="0 0 600 {height}" width="100%" role="img" aria-label="{label}" '
            f'style="max-width: 720px; display: block">{ticks}{"".join(parts)}</svg>')
