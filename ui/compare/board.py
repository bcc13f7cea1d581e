"""The compare leaderboard as shown: the Bradley–Terry table, the rating plot, the win matrix, the
position bias and separation notes, and the style-controlled ranking beside the plain one.

The ratings themselves (votes → pairwise battles → ratings) are core/compare_board.py's `build_board`.
"""

from __future__ import annotations

import html
import math

import pandas as pd

from compare.ratings import Leaderboard
from core.compare_board import Board

TABLE_COLUMNS = ["rank", "model", "rating", "95% CI", "votes", "win rate"]


def table_frame(board: Leaderboard, ranks: dict[str, str] | None = None) -> pd.DataFrame:
    """The leaderboard as shown: rank (a range such as "1–3" where intervals overlap), model, rating, CI, votes, win rate."""
    ranks = ranks or {}
    rows = [
        {"rank": ranks.get(r.model, str(r.rank)), "model": r.model, "rating": round(r.rating),
         "95% CI": f"{round(r.ci_low)} – {round(r.ci_high)}", "votes": r.votes,
         "win rate": "–" if r.win_rate is None else f"{r.win_rate:.0%}"}
        for r in board.ratings
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def rating_plot_html(board: Leaderboard, ranks: dict[str, str] | None = None) -> str:
    """A forest plot: each model's rating as a dot with its 95% interval as a bar (inline SVG); `ranks`: the
    rank labels (ranges such as "1–3"), else the strict order."""
    ranks = ranks or {}
    if not board.ratings:
        return "<div class='cmp-empty'>No votes yet. Run a comparison and vote: the ratings appear here.</div>"
    rows = board.ratings
    lo = min(r.ci_low for r in rows)
    hi = max(r.ci_high for r in rows)
    lo, hi = math.floor((lo - 20) / 50) * 50, math.ceil((hi + 20) / 50) * 50
    width, label_w, right_pad, row_h, top = 760, 240, 70, 34, 30
    plot_w = width - label_w - right_pad
    height = top + row_h * len(rows) + 10

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    parts = [f"<svg class='cmp-forest' viewBox='0 0 {width} {height}' width='100%' role='img' "
             f"aria-label='Ratings with 95% intervals' xmlns='http://www.w3.org/2000/svg'>"]
    step = 50 if hi - lo <= 400 else 100 if hi - lo <= 1000 else 250
    tick = math.ceil(lo / step) * step
    while tick <= hi:
        parts.append(f"<line x1='{x(tick):.1f}' y1='{top - 8}' x2='{x(tick):.1f}' y2='{height - 6}' class='grid'/>"
                     f"<text x='{x(tick):.1f}' y='{top - 12}' class='tick'>{tick}</text>")
        tick += step
    if lo <= 1000 <= hi:
        parts.append(f"<line x1='{x(1000):.1f}' y1='{top - 8}' x2='{x(1000):.1f}' y2='{height - 6}' class='mean'/>")
    for i, r in enumerate(rows):
        cy = top + row_h * i + row_h / 2
        name = html.escape(r.model if len(r.model) <= 34 else r.model[:33] + "…")
        parts.append(
            f"<g><title>{html.escape(r.model)}: {r.rating:.0f} (95% CI {r.ci_low:.0f}–{r.ci_high:.0f}), {r.votes} votes</title>"
            f"<text x='{label_w - 10}' y='{cy + 4:.1f}' class='name'>#{html.escape(ranks.get(r.model, str(r.rank)))} {name}</text>"
            f"<line x1='{x(r.ci_low):.1f}' y1='{cy:.1f}' x2='{x(r.ci_high):.1f}' y2='{cy:.1f}' class='ci'/>"
            f"<line x1='{x(r.ci_low):.1f}' y1='{cy - 6:.1f}' x2='{x(r.ci_low):.1f}' y2='{cy + 6:.1f}' class='ci'/>"
            f"<line x1='{x(r.ci_high):.1f}' y1='{cy - 6:.1f}' x2='{x(r.ci_high):.1f}' y2='{cy + 6:.1f}' class='ci'/>"
            f"<circle cx='{x(r.rating):.1f}' cy='{cy:.1f}' r='6' class='dot'/>"
            f"<text x='{x(r.ci_high) + 8:.1f}' y='{cy + 4:.1f}' class='val'>{r.rating:.0f}</text></g>"
        )
    parts.append("</svg>")
    return "<div class='cmp-plot'><div class='cmp-plot-title'>Rating with 95% bootstrap interval "  \
        "<span class='parley-muted'>(1000 = average; +400 = 10:1 odds)</span></div>" + "".join(parts) + "</div>"


def _cell_colour(share: float) -> str:
    """Red (loses) through neutral to green (wins), readable in light and dark themes."""
    hue = 120 * share  # 0 red, 60 amber, 120 green
    return f"hsla({hue:.0f}, 70%, 45%, {0.25 + 0.55 * abs(share - 0.5) * 2:.2f})"


def win_matrix_html(board: Leaderboard) -> str:
    """The pairwise win matrix as a heat map: share of row-vs-column battles the row model won."""
    if not board.ratings:
        return ""
    order = board.models
    head = "".join(f"<th title='{html.escape(m)}'>{html.escape(_short(m))}</th>" for m in order)
    body = []
    for a in order:
        cells = []
        for b in order:
            share = board.win_matrix[a][b]
            n = board.battles[a][b]
            if a == b or share is None:
                cells.append("<td class='na'>–</td>")
            else:
                cells.append(f"<td style='background:{_cell_colour(share)}' title='{html.escape(a)} vs {html.escape(b)}: "
                             f"{share:.0%} of {n} battles'>{share:.0%}<small>{n}</small></td>")
        body.append(f"<tr><th title='{html.escape(a)}'>{html.escape(_short(a))}</th>{''.join(cells)}</tr>")
    return ("<div class='cmp-plot'><div class='cmp-plot-title'>Win matrix <span class='parley-muted'>(row model's "
            "share of wins against the column model; ties count half; small number = battles)</span></div>"
            f"<table class='cmp-matrix'><tr><th></th>{head}</tr>{''.join(body)}</table></div>")


def _short(ref: str) -> str:
    return ref if len(ref) <= 28 else ref[:27] + "…"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def notes_md(result: Board) -> str:
    """Position bias, how many votes would separate the top pair (and the picked pair), and the flips to change #1."""
    lines = []
    p = result.position
    if p.share is not None:
        coef = result.position_coef
        odds = "" if coef is None else f"; modelled as {coef[0]:+.2f} log-odds (95% CI {coef[1]:+.2f} to {coef[2]:+.2f})"
        flag = " ⚠️ pane A is favoured" if p.ci_low is not None and p.ci_low > 0.5 else \
            " ⚠️ pane B is favoured" if p.ci_high is not None and p.ci_high < 0.5 else ""
        lines.append(f"**Position bias**: pane A won **{_pct(p.share)}** of {p.n} decisive battles "
                     f"(95% CI {_pct(p.ci_low)}–{_pct(p.ci_high)}){odds}.{flag} The ratings include this term, "
                     "so it favours no model.")
    for label, s in (("Top pair", result.top_pair), ("Picked pair", result.pair)):
        if s is None:
            continue
        if s.needed is None:
            lines.append(f"**{label}** {s.a} vs {s.b}: equal ratings; no number of votes is expected to separate them.")
        else:
            lines.append(f"**{label}** {s.a} vs {s.b}: expected win rate {s.win_rate:.0%}; separating them (5% two-sided, "
                         f"80% power, ties excluded) takes about **{s.needed}** decisive votes between them; "
                         f"{s.have} so far, **{s.more}** more.")
    f = result.fragility
    if f is not None and f.flips is not None:
        lines.append(f"**Fragility**: flipping **{f.flips}** of {f.leader}'s wins over {f.challenger} would change who is first.")
    elif f is not None:
        lines.append(f"**Fragility**: {f.leader} has no head-to-head wins whose flip would change who is first.")
    return "\n\n".join(lines)


def style_html(result: Board) -> str:
    """The style-controlled ranking beside the plain one, with each model's rank change."""
    style = result.style
    if style is None or not result.board.ratings:
        return ""
    order = sorted(style.models, key=lambda m: (-style.rating[m], m))
    plain_pos = {r.model: k for k, r in enumerate(result.board.ratings)}
    rows = []
    for k, m in enumerate(order):
        moved = plain_pos[m] - k  # up is positive
        arrow = "=" if moved == 0 else f"▲{moved}" if moved > 0 else f"▼{-moved}"
        plain = result.board.rating_of(m)
        rows.append(f"<tr><td>{html.escape(result.style_ranks[m])}</td><td title='{html.escape(m)}'>{html.escape(_short(m))}</td>"
                    f"<td>{style.rating[m]:.0f}</td><td>{style.ci_low[m]:.0f} – {style.ci_high[m]:.0f}</td>"
                    f"<td>{html.escape(result.ranks[m])}</td><td>{plain.rating:.0f}</td><td>{arrow}</td></tr>")
    coefs = ", ".join(f"{k} {v:+.2f}" for k, v in style.coefficients.items() if k != "position")
    return ("<div class='cmp-plot' id='cmp-style'><div class='cmp-plot-title'>Style-controlled ranking <span class='parley-muted'>"
            f"(reply length, markdown headers, list items and bold held equal; log-odds per sd: {html.escape(coefs)})</span></div>"
            "<div class='cmp-scroll'><table class='cmp-style'><tr><th>rank</th><th>model</th><th>style-controlled</th><th>95% CI</th>"
            f"<th>rank without</th><th>without</th><th>change</th></tr>{''.join(rows)}</table></div></div>")
