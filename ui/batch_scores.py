"""The batch tab's scores: each model's mean score with its 95% interval (a table and a plot) and the paired comparisons.

Formatting only: the numbers are compare/batch_summary.py's (compare/paired.py's statistics).
"""

from __future__ import annotations

import html

import pandas as pd

from compare.batch import BatchSummary

SCORE_COLUMNS = ["Model", "Scored", "Mean score", "95% interval"]
PAIRED_COLUMNS = ["A", "B", "Verdict", "n", "A − B", "95% interval", "A / B better", "p", "p (Holm)"]
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
    rows = [{"A": p.a, "B": p.b, "n": p.n, "A − B": round(p.diff, 3), "95% interval": _ci(p.diff_ci, True),
             "A / B better": f"{p.a_better} / {p.b_better}", "p": _p(p.p_value),
             "p (Holm)": _p(p.p_holm), "Verdict": verdict(p.a, p.b, p.p_holm, p.p_value, p.diff)}
            for p in summary.paired]
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def scores_plot(summary: BatchSummary) -> str:
    """A dot-and-whisker plot in HTML: per scored model its name, its 95% interval as a bar, its mean as a dot (0–1).

    HTML with inline styles, not an SVG: its text keeps the page's size on a phone (a scaled SVG's would
    shrink to a few pixels), and colours follow the theme (currentColor and the accent) in light and dark mode.
    """
    scored = [m for m in summary.models if m.scored and m.score_mean is not None]
    if not scored:
        return ""

    def pct(v: float) -> str:
        return f"{100 * min(max(v, 0.0), 1.0):.1f}%"

    rows, described = [], []
    for m in scored:
        assert m.score_mean is not None
        lo, hi = m.score_ci or (m.score_mean, m.score_mean)
        described.append(f"{m.model}: {m.score_mean:.3f} ({_ci(m.score_ci)}), {m.scored} scored")
        rows.append(
            '<div class="parley-score-row" style="margin: 0 0 10px">'
            f'<div style="font-size: 0.9em; overflow-wrap: anywhere">{html.escape(m.model)} · <b>{m.score_mean:.3f}</b> '
            f'<span style="opacity: 0.75">[{lo:.2f}, {hi:.2f}] n={m.scored}</span></div>'
            '<div style="position: relative; height: 14px; margin: 2px 7px 0">'
            '<div style="position: absolute; inset: 6px 0 auto; height: 1px; background: currentColor; opacity: 0.15"></div>'
            f'<div style="position: absolute; top: 2px; height: 10px; left: {pct(lo)}; width: calc({pct(hi)} - {pct(lo)});'
            ' border: 2px solid currentColor; border-width: 0 2px; box-sizing: border-box">'
            '<div style="position: absolute; top: 4px; left: 0; right: 0; height: 2px; background: currentColor"></div></div>'
            f'<div style="position: absolute; top: 0; left: {pct(m.score_mean)}; width: 12px; height: 12px; margin-left: -6px;'
            ' border-radius: 50%; background: var(--color-accent, #f97316)"></div></div></div>')
    axis = "".join(f'<span style="position: absolute; left: {pct(t)}; transform: translateX(-50%)">{t:g}</span>'
                   for t in (0, 0.25, 0.5, 0.75, 1))
    label = html.escape("Mean score with 95% interval. " + "; ".join(described), quote=True)
    return (f'<div role="img" aria-label="{label}" style="max-width: 720px">{"".join(rows)}'
            f'<div aria-hidden="true" style="position: relative; height: 1.4em; margin: 0 7px; font-size: 0.8em; '
            f'opacity: 0.8">{axis}</div></div>')
