"""LLM judges, the maths without I/O: prompt templates, verdict parsing, both-orders combination,
agreement with human votes (percent and Cohen's kappa), position consistency and the flagging rule.

A judge sees the question and two answers as "Answer 1" and "Answer 2", never a model name, and is
asked twice, once in each order (MT-Bench, arXiv 2306.05685; arXiv 2305.17926 shows that swapping
the order flips many verdicts). A verdict that changes with the order is a tie and marked
position-inconsistent. See compare/README.md ("Judges") for the formulas and the flagging rule.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

#: One order's verdict as the judge wrote it: answer 1 better, answer 2 better, or a tie.
OrderVerdict = Literal["1", "2", "tie"]
#: A pair's final verdict in the pair's own terms: model_a won, model_b won, a tie, or no verdict.
Final = Literal["a", "b", "tie", "none"]
CATEGORIES: tuple[str, ...] = ("a", "b", "tie")

#: The flagging rule: with at least FLAG_MIN_N verdicts compared with the user's votes, a judge whose
#: kappa is below FLAG_KAPPA or whose raw agreement is below FLAG_AGREEMENT is flagged; with at least
#: FLAG_MIN_N verdicts judged in both orders, one whose position consistency is below FLAG_CONSISTENCY
#: is flagged too. Kappa 0.4 is the usual lower edge of "moderate" agreement (Landis and Koch); GPT-4
#: agreed with experts about 66% with ties counted (arXiv 2306.05685), so below 60% is worse than that.
FLAG_MIN_N = 10
FLAG_KAPPA = 0.4
FLAG_AGREEMENT = 0.6
FLAG_CONSISTENCY = 0.5

#: Placeholders a pairwise template must hold (each once is enough; the answers are put in verbatim).
PAIR_FIELDS = ("{question}", "{answer_1}", "{answer_2}")
RUBRIC_FIELDS = ("{question}", "{answer}")
TEMPLATE_MAX = 20_000

DEFAULT_PAIR_TEMPLATE = """\
Please act as an impartial judge and evaluate the quality of the two answers to the user question \
shown below. Choose the answer that follows the user's instructions and answers the question better: \
consider helpfulness, relevance, accuracy, depth and level of detail. Do not let the order in which \
the answers are shown, their length, or any name influence you. Be as objective as possible. \
Explain briefly, then give your verdict on the last line, exactly one of: [[1]] if answer 1 is \
better, [[2]] if answer 2 is better, [[tie]] for a tie.

[Question]
{question}

[Answer 1]
{answer_1}
[End of answer 1]

[Answer 2]
{answer_2}
[End of answer 2]
"""

DEFAULT_RUBRIC_TEMPLATE = """\
Please act as an impartial judge and rate the answer to the user question shown below on a scale \
of 1 to 10, considering helpfulness, relevance, accuracy, depth and level of detail. Explain \
briefly, then give your rating on the last line in double brackets, for example: [[7]].

[Question]
{question}

[Answer]
{answer}
[End of answer]
"""

_FIELD = re.compile(r"\{(question|answer_1|answer_2|answer)\}")
# The last bracketed verdict wins: judges often quote the format ("[[1]] if ...") before deciding.
_VERDICT = re.compile(r"\[\[\s*(1|2|tie|a|b)\s*\]\]", re.IGNORECASE)
_SCORE = re.compile(r"\[\[\s*(\d{1,2}(?:\.\d+)?)\s*(?:/\s*10\s*)?\]\]")


class TemplateError(ValueError):
    """A judge template that cannot be used; the message says what to fix."""


def template_hash(template: str) -> str:
    """A short, stable id of a template's exact text (sha256, hex, first 16 characters)."""
    return hashlib.sha256(template.encode("utf-8")).hexdigest()[:16]


def check_template(template: str, *, rubric: bool = False) -> str:
    """The template as used (the default when empty), or TemplateError naming a missing placeholder."""
    if template is not None and not isinstance(template, str):
        raise TemplateError("The judge prompt must be text.")
    text = (template or "").strip()
    if not text:
        return DEFAULT_RUBRIC_TEMPLATE if rubric else DEFAULT_PAIR_TEMPLATE
    if len(text) > TEMPLATE_MAX:
        raise TemplateError(f"The judge prompt is {len(text):,} characters long; the limit is {TEMPLATE_MAX:,}.")
    missing = [f for f in (RUBRIC_FIELDS if rubric else PAIR_FIELDS) if f not in text]
    if missing:
        raise TemplateError("The judge prompt must contain " + ", ".join(missing) + " (where the text goes).")
    return text


def render(template: str, **values: str) -> str:
    """The template with its placeholders filled in one pass (an answer containing "{answer_2}" stays as written)."""
    return _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def pair_prompt(template: str, question: str, first: str, second: str) -> str:
    """The prompt of one order: `first` shown as answer 1, `second` as answer 2."""
    return render(template, question=question, answer_1=first, answer_2=second)


def rubric_prompt(template: str, question: str, answer: str) -> str:
    return render(template, question=question, answer=answer)


def parse_verdict(text: str) -> OrderVerdict | None:
    """The last [[1]] / [[2]] / [[tie]] in a judge's reply ([[A]]/[[B]] read as 1/2); None when there is none."""
    found = _VERDICT.findall(text or "")
    if not found:
        return None
    last = found[-1].lower()
    return "1" if last in ("1", "a") else "2" if last in ("2", "b") else "tie"


def parse_score(text: str) -> float | None:
    """The last [[n]] rating (1-10) mapped to 0..1 as (n − 1) / 9; None when there is none in range."""
    for raw in reversed(_SCORE.findall(text or "")):
        value = float(raw)
        if 1.0 <= value <= 10.0:
            return (value - 1.0) / 9.0
    return None


def in_pair_terms(verdict: OrderVerdict | None, *, swapped: bool) -> Final:
    """One order's verdict as a/b/tie: in the swapped order answer 1 is model_b's."""
    if verdict is None:
        return "none"
    if verdict == "tie":
        return "tie"
    first_won = verdict == "1"
    return "b" if first_won == swapped else "a"


def combine(ab: OrderVerdict | None, ba: OrderVerdict | None) -> tuple[Final, bool | None]:
    """The final verdict from both orders and whether they agree.

    `ab`: model_a's answer shown first; `ba`: model_b's shown first. Both the same → that verdict,
    consistent. Different → a tie, inconsistent. Either unparseable → "none", consistency unknown.
    """
    x, y = in_pair_terms(ab, swapped=False), in_pair_terms(ba, swapped=True)
    if x == "none" or y == "none":
        return "none", None
    if x == y:
        return x, True
    return "tie", False


def human_outcome(verdict: str, winner_slot: int | None, slot_a: int, slot_b: int) -> Final | None:
    """What the user's vote on a comparison says about the pair in slots (slot_a, slot_b).

    "slot" with the winner in the pair → a or b; with the winner elsewhere → None (the vote says
    nothing about these two); "tie" and "both_bad" → tie (as the leaderboard counts them).
    """
    if verdict == "slot":
        return "a" if winner_slot == slot_a else "b" if winner_slot == slot_b else None
    if verdict in ("tie", "both_bad"):
        return "tie"
    return None


@dataclass(frozen=True)
class Agreement:
    """A judge against the user's votes: n pairs, raw agreement, Cohen's kappa (None when undefined)."""

    n: int
    agree: int
    agreement: float | None
    kappa: float | None


def cohen_kappa(pairs: Sequence[tuple[str, str]], categories: Sequence[str] = CATEGORIES) -> Agreement:
    """Agreement and Cohen's kappa over (judge, human) labels.

    p_o = share of pairs with equal labels; p_e = Σ_k p_judge(k)·p_human(k);
    κ = (p_o − p_e) / (1 − p_e), None when p_e = 1 (both always said the same one category).
    """
    n = len(pairs)
    if n == 0:
        return Agreement(0, 0, None, None)
    agree = sum(1 for j, h in pairs if j == h)
    p_o = agree / n
    p_e = sum((sum(1 for j, _ in pairs if j == k) / n) * (sum(1 for _, h in pairs if h == k) / n) for k in categories)
    kappa = None if abs(1.0 - p_e) < 1e-12 else (p_o - p_e) / (1.0 - p_e)
    return Agreement(n, agree, p_o, kappa)


@dataclass(frozen=True)
class JudgeAudit:
    """One judge's audit: its verdicts, how many were unparseable, position consistency, agreement, flag."""

    judge: str
    verdicts: int
    unparsed: int
    both_orders: int
    consistent: int
    agreement: Agreement
    flagged: bool
    reasons: tuple[str, ...]

    @property
    def consistency(self) -> float | None:
        """Share of verdicts judged in both orders whose two orders agree."""
        return None if self.both_orders == 0 else self.consistent / self.both_orders

    def as_dict(self) -> dict[str, object]:
        a = self.agreement
        return {"judge": self.judge, "verdicts": self.verdicts, "unparsed": self.unparsed,
                "consistency": None if self.consistency is None else round(self.consistency, 4),
                "both_orders": self.both_orders, "n": a.n,
                "agreement": None if a.agreement is None else round(a.agreement, 4),
                "kappa": None if a.kappa is None else round(a.kappa, 4),
                "flagged": self.flagged, "reasons": list(self.reasons)}


def flag_reasons(agreement: Agreement, both_orders: int, consistent: int) -> tuple[str, ...]:
    """Why a judge is flagged (empty: not flagged), by the constants above."""
    reasons = []
    if agreement.n >= FLAG_MIN_N and (
        (agreement.kappa is not None and agreement.kappa < FLAG_KAPPA)
        or (agreement.agreement is not None and agreement.agreement < FLAG_AGREEMENT)
    ):
        reasons.append("low agreement with your votes")
    if both_orders >= FLAG_MIN_N and consistent / both_orders < FLAG_CONSISTENCY:
        reasons.append("verdicts flip with the order (position bias)")
    return tuple(reasons)


@dataclass(frozen=True)
class JudgedPair:
    """What an audit needs of one stored pairwise verdict (`human`: the user's outcome for the pair, if any)."""

    judge: str
    final: str
    consistent: bool | None
    human: str | None = None


def audit(judge: str, verdicts: Iterable[JudgedPair]) -> JudgeAudit:
    """One judge's audit over its pairwise verdicts."""
    rows = [v for v in verdicts if v.judge == judge]
    both = [v for v in rows if v.consistent is not None]
    consistent = sum(1 for v in both if v.consistent)
    pairs = [(v.final, v.human) for v in rows if v.final in CATEGORIES and v.human in CATEGORIES]
    agreement = cohen_kappa([(j, h) for j, h in pairs if h is not None])
    reasons = flag_reasons(agreement, len(both), consistent)
    return JudgeAudit(judge, len(rows), sum(1 for v in rows if v.final == "none"), len(both), consistent, agreement,
                      bool(reasons), reasons)


def audits(verdicts: Iterable[JudgedPair]) -> list[JudgeAudit]:
    """Every judge's audit, by judge name."""
    rows = list(verdicts)
    return [audit(j, rows) for j in sorted({v.judge for v in rows})]


def win_rates(verdicts: Iterable[Mapping[str, object]]) -> dict[str, dict[str, dict[str, float | int]]]:
    """Per judge, per model: decisive wins, losses, ties and the win rate (ties half) over pairwise verdicts.

    Each verdict is a mapping with judge, model_a, model_b and final; "none" is left out.
    """
    table: dict[str, dict[str, dict[str, float | int]]] = {}
    for v in verdicts:
        final = v.get("final")
        if final not in CATEGORIES:
            continue
        judge = str(v.get("judge"))
        for model, won in ((v.get("model_a"), final == "a"), (v.get("model_b"), final == "b")):
            row = table.setdefault(judge, {}).setdefault(str(model), {"wins": 0, "losses": 0, "ties": 0, "n": 0})
            row["n"] += 1
            if final == "tie":
                row["ties"] += 1
            elif won:
                row["wins"] += 1
            else:
                row["losses"] += 1
    for models in table.values():
        for row in models.values():
            row["win_rate"] = round((row["wins"] + 0.5 * row["ties"]) / row["n"], 4)
    return table
