"""Asking judge models: one call per order (or per rubric score), bounded concurrency, costs. No storage.

core/judges.py (comparisons and Batch-tab runs, stored) and the batch command line (`--judge`, written
into the run's output) both call this. Every judge call goes through `_ask_judge`, the one place a
trace span can wrap. The judge gets one user message: the rendered template, never a model name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

from chat import tracing
from chat.errors import ChatError
from chat.providers.base import Provider
from chat.turn import Turn, TurnPolicy
from chat.types import Message, ModelInfo, Params
from compare.judging import (
    DEFAULT_PAIR_TEMPLATE,
    DEFAULT_RUBRIC_TEMPLATE,
    OrderVerdict,
    combine,
    pair_prompt,
    parse_score,
    parse_verdict,
    rubric_prompt,
    template_hash,
)
from compare.pricing import PriceTable

if TYPE_CHECKING:
    from chat.registry import Registry

#: Judge calls at once, per judging run (a judging run can be hundreds of calls; providers rate-limit).
JUDGE_CONCURRENCY = 4
#: Judges are asked for a short explanation and a verdict: greedy decoding, a bounded reply.
JUDGE_PARAMS = Params(temperature=0.0, max_tokens=1024)


@dataclass(frozen=True)
class JudgeAnswer:
    """One judge call: its reply text, usage, cost (None when unpriced) and error (None when it answered)."""

    text: str
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None
    error: str | None


@dataclass
class PairVerdict:
    """A judge's verdict on two answers, asked in both orders. `ab`: model_a's answer shown as answer 1."""

    judge: str
    model_a: str
    model_b: str
    template: str
    verdict_ab: OrderVerdict | None
    verdict_ba: OrderVerdict | None
    final: str
    consistent: bool | None
    raw_ab: str
    raw_ba: str
    cost: float | None
    input_tokens: int
    output_tokens: int
    error: str | None
    slot_a: int | None = None
    slot_b: int | None = None
    prompt_id: str | None = None

    @property
    def template_hash(self) -> str:
        return template_hash(self.template)

    def as_dict(self) -> dict[str, Any]:
        """The verdict as the batch output and the API give it (the template by its hash)."""
        return {"kind": "pair", "judge": self.judge, "prompt_id": self.prompt_id, "model_a": self.model_a,
                "model_b": self.model_b, "verdict_ab": self.verdict_ab, "verdict_ba": self.verdict_ba,
                "final": self.final, "consistent": self.consistent, "raw_ab": self.raw_ab, "raw_ba": self.raw_ba,
                "cost": self.cost, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "error": self.error, "template_hash": self.template_hash}


@dataclass
class RubricScore:
    """A judge's 1-10 rating of one answer, as 0..1 (None when it gave none)."""

    judge: str
    model: str
    template: str
    score: float | None
    raw: str
    cost: float | None
    input_tokens: int
    output_tokens: int
    error: str | None
    prompt_id: str | None = None

    @property
    def template_hash(self) -> str:
        return template_hash(self.template)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "rubric", "judge": self.judge, "prompt_id": self.prompt_id, "model": self.model,
                "score": None if self.score is None else round(self.score, 4), "raw": self.raw, "cost": self.cost,
                "input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "error": self.error,
                "template_hash": self.template_hash}


def _sum_cost(*answers: JudgeAnswer) -> float | None:
    costs = [a.cost for a in answers]
    return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)


async def _ask_judge(provider: Provider, info: ModelInfo, prompt: str, *, policy: TurnPolicy | None,
                     prices: PriceTable) -> JudgeAnswer:
    """One judge call: the rendered prompt as the only (user) message, the reply read to its end."""
    turn = Turn(provider, info, [Message(role="user", content=prompt)], JUDGE_PARAMS, policy=policy)
    with tracing.judge_call(turn, judge=info.ref):  # a span only when tracing is on (chat/tracing.py)
        result = await turn.run()
    usage = result.usage
    cost = prices.usage_cost(result.ref, usage)
    error = result.error.message if isinstance(result.error, ChatError) else None
    return JudgeAnswer(result.text, usage.input_tokens, usage.output_tokens, cost, error)


@dataclass
class JudgePanel:
    """Judges resolved and ready: ask pairs and rubric scores, at most `concurrency` calls at once."""

    judges: Mapping[str, tuple[Provider, ModelInfo]]
    prices: PriceTable = field(default_factory=PriceTable)
    policy: TurnPolicy | None = None
    concurrency: int = JUDGE_CONCURRENCY
    #: Called after every finished judge call (progress bars).
    on_call: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        self._gate = asyncio.Semaphore(max(1, self.concurrency))

    async def ask(self, judge: str, prompt: str) -> JudgeAnswer:
        provider, info = self.judges[judge]
        async with self._gate:
            answer = await _ask_judge(provider, info, prompt, policy=self.policy, prices=self.prices)
        if self.on_call:
            self.on_call()
        return answer

    async def pair(self, judge: str, question: str, a: tuple[str, str], b: tuple[str, str], *,
                   template: str = DEFAULT_PAIR_TEMPLATE) -> PairVerdict:
        """Judge (model, text) `a` against `b` in both orders at once."""
        first, second = await asyncio.gather(self.ask(judge, pair_prompt(template, question, a[1], b[1])),
                                             self.ask(judge, pair_prompt(template, question, b[1], a[1])))
        ab = parse_verdict(first.text) if first.error is None else None
        ba = parse_verdict(second.text) if second.error is None else None
        final, consistent = combine(ab, ba)
        return PairVerdict(judge=judge, model_a=a[0], model_b=b[0], template=template, verdict_ab=ab, verdict_ba=ba,
                           final=final, consistent=consistent, raw_ab=first.text, raw_ba=second.text,
                           cost=_sum_cost(first, second),
                           input_tokens=(first.input_tokens or 0) + (second.input_tokens or 0),
                           output_tokens=(first.output_tokens or 0) + (second.output_tokens or 0),
                           error=first.error or second.error)

    async def rubric(self, judge: str, question: str, answer: tuple[str, str], *,
                     template: str = DEFAULT_RUBRIC_TEMPLATE) -> RubricScore:
        reply = await self.ask(judge, rubric_prompt(template, question, answer[1]))
        return RubricScore(judge=judge, model=answer[0], template=template,
                           score=parse_score(reply.text) if reply.error is None else None, raw=reply.text,
                           cost=reply.cost, input_tokens=reply.input_tokens or 0, output_tokens=reply.output_tokens or 0,
                           error=reply.error)


# -- batch runs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchItem:
    """One prompt of a finished batch run: its question and every model's answer (rows without an error)."""

    prompt_id: str
    question: str
    answers: tuple[tuple[str, str], ...]


def batch_items(rows: Iterable[Mapping[str, Any]]) -> list[BatchItem]:
    """The judgeable prompts of a run's result rows, in the order the prompts first appear."""
    by_prompt: dict[str, tuple[str, dict[str, str]]] = {}
    for r in rows:
        if r.get("error") is not None:
            continue
        pid = str(r.get("prompt_id"))
        question, answers = by_prompt.setdefault(pid, (str(r.get("prompt") or ""), {}))
        answers[str(r.get("model"))] = str(r.get("text") or "")
    return [BatchItem(pid, q, tuple(sorted(a.items()))) for pid, (q, a) in by_prompt.items()]


def batch_calls(items: Sequence[BatchItem], judges: int, *, rubric: bool) -> int:
    """Judge calls a batch judging run makes: 2 per model pair and judge, plus 1 per answer and judge with the rubric."""
    pairs = sum(len(list(combinations(i.answers, 2))) for i in items)
    answers = sum(len(i.answers) for i in items) if rubric else 0
    return judges * (2 * pairs + answers)


async def judge_batch(panel: JudgePanel, items: Sequence[BatchItem], *, rubric: bool = False,
                      template: str = DEFAULT_PAIR_TEMPLATE,
                      rubric_template: str = DEFAULT_RUBRIC_TEMPLATE) -> tuple[list[PairVerdict], list[RubricScore]]:
    """Every judge on every model pair of every prompt (both orders), and the rubric per answer when asked."""

    async def pair(judge: str, item: BatchItem, a: tuple[str, str], b: tuple[str, str]) -> PairVerdict:
        v = await panel.pair(judge, item.question, a, b, template=template)
        v.prompt_id = item.prompt_id
        return v

    async def score(judge: str, item: BatchItem, answer: tuple[str, str]) -> RubricScore:
        s = await panel.rubric(judge, item.question, answer, template=rubric_template)
        s.prompt_id = item.prompt_id
        return s

    pairs = [pair(j, i, a, b) for j in panel.judges for i in items for a, b in combinations(i.answers, 2)]
    scores = [score(j, i, a) for j in panel.judges for i in items for a in i.answers] if rubric else []
    verdicts = await asyncio.gather(*pairs)
    rated = await asyncio.gather(*scores)
    return list(verdicts), list(rated)


def judge_summary(verdicts: Sequence[PairVerdict], scores: Sequence[RubricScore]) -> dict[str, Any]:
    """The `judges` part of a batch summary: per judge its win rates by model, consistency, rubric means and cost."""
    from compare.judging import win_rates  # local: keeps this module's import list about calling judges

    rates = win_rates(v.as_dict() for v in verdicts)
    out: dict[str, Any] = {}
    for judge in sorted({v.judge for v in verdicts} | {s.judge for s in scores}):
        mine = [v for v in verdicts if v.judge == judge]
        both = [v for v in mine if v.consistent is not None]
        rated = [s for s in scores if s.judge == judge]
        rubric: dict[str, dict[str, Any]] = {}
        for model in sorted({s.model for s in rated}):
            values = [s.score for s in rated if s.model == model and s.score is not None]
            rubric[model] = {"n": len(values), "mean": round(sum(values) / len(values), 4) if values else None}
        costs = [c for c in [*(v.cost for v in mine), *(s.cost for s in rated)] if c is not None]
        out[judge] = {
            "pairs": len(mine),
            "unparsed": sum(1 for v in mine if v.final == "none"),
            "consistency": round(sum(1 for v in both if v.consistent) / len(both), 4) if both else None,
            "win_rates": rates.get(judge, {}),
            "rubric": rubric,
            "cost": round(sum(costs), 8) if costs else None,
        }
    return out


# -- the batch command line (`--judge`) ------------------------------------------------------------


@dataclass
class JudgedRun:
    """A batch run's judge verdicts and rubric scores, with the summary the `--summary` JSON gains as `judges`."""

    verdicts: list[PairVerdict]
    scores: list[RubricScore]

    def summary(self) -> dict[str, Any]:
        return judge_summary(self.verdicts, self.scores)

    def rows(self) -> list[dict[str, Any]]:
        """One JSON object per verdict and per rubric score (the `.judges.jsonl` file)."""
        return [*(v.as_dict() for v in self.verdicts), *(s.as_dict() for s in self.scores)]

    def to_markdown(self) -> str:
        """Per judge and model: the win rate over its pairwise verdicts (ties half) and the mean rubric score."""
        lines = ["| judge | model | win rate | wins / losses / ties | rubric mean | consistency |",
                 "|---|---|---|---|---|---|"]
        for judge, s in self.summary().items():
            models = sorted(set(s["win_rates"]) | set(s["rubric"]))
            consistency = "–" if s["consistency"] is None else f"{s['consistency']:.0%}"
            for model in models:
                w = s["win_rates"].get(model)
                r = s["rubric"].get(model, {}).get("mean")
                rate = "–" if w is None else format(w["win_rate"], ".0%")
                wlt = "–" if w is None else f"{w['wins']} / {w['losses']} / {w['ties']}"
                mean = "–" if r is None else f"{r:.3f}"
                lines.append(f"| {judge} | {model} | {rate} | {wlt} | {mean} | {consistency} |")
        return "\n".join(lines)


async def judge_rows(registry: Registry, rows: Iterable[Mapping[str, Any]], judges: Sequence[str], *, rubric: bool = False,
                     prices: PriceTable | None = None, policy: TurnPolicy | None = None,
                     template: str = DEFAULT_PAIR_TEMPLATE, concurrency: int = JUDGE_CONCURRENCY) -> JudgedRun:
    """Judge a finished run's rows (the command line: no database, no rate limit; a bad judge name raises ChatError)."""
    resolved = {}
    for ref in judges:
        provider, info = registry.resolve(ref)
        resolved[info.ref] = (provider, info)
    panel = JudgePanel(resolved, prices=prices or PriceTable(), policy=policy, concurrency=concurrency)
    verdicts, scores = await judge_batch(panel, batch_items(rows), rubric=rubric, template=template)
    return JudgedRun(verdicts, scores)
