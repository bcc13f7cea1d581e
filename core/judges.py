"""Judges, audited: LLM judges on a stored comparison or a finished batch run, their leaderboard and audit. No Gradio.

The rules every surface (the Compare tab's Judges accordion, the Batch tab, `/judge`, `/judge_board`)
shares: 1-4 judge models from the registry; an editable prompt that must keep its placeholders; every
judge call is a provider call charged before any is sent (comparisons: the chat/compare budget; batch
runs: the batch budget), refused whole or not at all; each pair in both orders (compare/judge_run.py);
verdicts stored apart from the human votes (storage/judges.py) and ranked per judge, never mixed with
them; each judge audited against the user's own votes (compare/judging.py). A blind comparison's
verdicts name no model before its vote: results speak of panes ("Model A"), as the tab does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import combinations
from pathlib import Path
from typing import Any

from chat.errors import ChatError
from chat.providers.base import Provider
from chat.types import ModelInfo
from compare.batch import read_results
from compare.batch_summary import latest_rows
from compare.judge_run import (
    BatchItem,
    JudgedRun,
    JudgePanel,
    PairVerdict,
    RubricScore,
    batch_calls,
    batch_items,
    judge_batch,
    judge_summary,
)
from compare.judging import JudgedPair, TemplateError, audits, check_template, template_hash
from compare.pricing import PriceTable
from compare.ranks import rank_label, rank_ranges
from compare.ratings import Leaderboard, Vote, leaderboard
from core.compare_run import blind_label
from core.services import Services
from storage import judges as store
from storage.errors import NotFound, StorageError

MAX_JUDGES = 4
#: Bootstrap resamples behind each judge's rating intervals (as the human leaderboard's).
BOARD_ROUNDS = 200


class JudgeProblem(Exception):
    """Why judging was refused or failed; nothing was sent (or, for a storage failure, nothing kept)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ComparisonJudging:
    """What judging one comparison gives: each verdict as it may be shown, the calls made and the cost."""

    comparison_id: str
    hidden: bool  # a blind comparison without its vote: panes only, no model names
    verdicts: list[dict[str, Any]]
    calls: int
    cost: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"comparison_id": self.comparison_id, "names_hidden": self.hidden, "calls": self.calls,
                "cost": self.cost, "verdicts": self.verdicts}


@dataclass(frozen=True)
class JudgeBoard:
    """Each judge's own ranking (Bradley–Terry over its verdicts) and its audit against the user's votes."""

    boards: dict[str, tuple[Leaderboard, dict[str, str]]]
    audits: list[dict[str, Any]]
    costs: dict[str, float | None]

    def as_dict(self) -> dict[str, Any]:
        """The `/judge_board` API's result (JSON-ready)."""
        judges = {}
        for judge, (board, ranks) in self.boards.items():
            judges[judge] = {"battles": board.total_votes, "cost": self.costs.get(judge), "ratings": [
                {"rank": ranks[r.model], "model": r.model, "rating": round(r.rating, 1),
                 "ci": [round(r.ci_low, 1), round(r.ci_high, 1)], "verdicts": r.votes,
                 "win_rate": None if r.win_rate is None else round(r.win_rate, 4)} for r in board.ratings]}
        return {"judges": judges, "agreement": self.audits}


@dataclass(frozen=True)
class BatchJudging:
    """What judging a Batch-tab run gives: the verdicts and scores, their summary, the calls, the cost and the file."""

    judged: JudgedRun
    summary: dict[str, Any]
    calls: int
    cost: float | None
    path: Path


def _total(costs: Sequence[float | None]) -> float | None:
    return None if not costs or any(c is None for c in costs) else round(sum(c for c in costs if c is not None), 10)


def _pair_row(v: PairVerdict, **target: Any) -> dict[str, Any]:
    return {**target, "kind": "pair", "judge": v.judge, "template": v.template, "template_hash": template_hash(v.template),
            "model_a": v.model_a, "model_b": v.model_b, "verdict_ab": v.verdict_ab, "verdict_ba": v.verdict_ba,
            "final": v.final, "consistent": v.consistent, "raw_ab": v.raw_ab, "raw_ba": v.raw_ba,
            "input_tokens": v.input_tokens, "output_tokens": v.output_tokens, "cost_usd": v.cost, "error": v.error}


def _rubric_row(s: RubricScore, **target: Any) -> dict[str, Any]:
    return {**target, "kind": "rubric", "judge": s.judge, "template": s.template, "template_hash": template_hash(s.template),
            "model_a": s.model, "model_b": None, "final": "none", "score": s.score, "raw_ab": s.raw,
            "input_tokens": s.input_tokens, "output_tokens": s.output_tokens, "cost_usd": s.cost, "error": s.error}


class Judges:
    """Judge a comparison or a batch run, store the verdicts, rank and audit the judges."""

    def __init__(self, services: Services, prices: PriceTable):
        self.s = services
        self.prices = prices

    def resolve(self, judges: Any) -> dict[str, tuple[Provider, ModelInfo]]:
        """1-4 judge models (a list, or one comma-separated string), each a configured provider:model."""
        if isinstance(judges, str):
            judges = [j for j in judges.split(",") if j.strip()]
        if not isinstance(judges, list | tuple) or not judges:
            raise JudgeProblem("Choose at least one judge model (provider:model).")
        refs = list(dict.fromkeys(str(j).strip() for j in judges))
        if len(refs) > MAX_JUDGES:
            raise JudgeProblem(f"Choose at most {MAX_JUDGES} judges.")
        resolved: dict[str, tuple[Provider, ModelInfo]] = {}
        for ref in refs:
            try:
                provider, info = self.s.registry.resolve(ref)
            except ChatError as e:
                raise JudgeProblem(f"Judge {ref[:80]}: {e.message}") from e
            resolved[info.ref] = (provider, info)
        return resolved

    def panel(self, judges: Mapping[str, tuple[Provider, ModelInfo]], prices: PriceTable | None = None) -> JudgePanel:
        return JudgePanel(judges, prices=prices or self.prices, policy=self.s.policy)

    @staticmethod
    def template(text: Any, *, rubric: bool = False) -> str:
        try:
            return check_template(text, rubric=rubric)
        except TemplateError as e:
            raise JudgeProblem(str(e)) from e

    async def _charge(self, request: Any, owner: str, calls: int, *, batch: bool = False) -> None:
        """Every judge call counts; all are charged before the first is sent, or none is sent."""
        verdict = await self.s.limiter.charge(self.s.limiter.identity(request, owner), calls=calls,
                                              budget="batch" if batch else "calls")
        if not verdict.allowed:
            raise JudgeProblem(verdict.message)

    # -- a comparison -----------------------------------------------------------------------------

    async def judge_comparison(self, *, owner: str, request: Any, comparison_id: Any, judges: Any,
                               template: Any = None, prices: PriceTable | None = None) -> ComparisonJudging:
        """Every judge on every pair of the comparison's answered panes, both orders; stored and returned."""
        chosen = self.resolve(judges)
        text = self.template(template)
        try:
            subject = await self.s.db(store.judge_subject, owner=owner, comparison_id=comparison_id)
        except NotFound as e:
            raise JudgeProblem(e.message) from e
        except StorageError as e:
            raise JudgeProblem(f"The comparison could not be read: {e.message}") from e
        answered = [i for i, (t, err) in enumerate(zip(subject.texts, subject.errors)) if t.strip() and err is None]
        pairs = list(combinations(answered, 2))
        if not pairs:
            raise JudgeProblem("This comparison has fewer than two answers to judge. Nothing was sent.")
        calls = 2 * len(pairs) * len(chosen)
        await self._charge(request, owner, calls)
        panel = self.panel(chosen, prices)

        async def one(judge: str, i: int, j: int) -> PairVerdict:
            v = await panel.pair(judge, subject.prompt, (subject.models[i], subject.texts[i]),
                                 (subject.models[j], subject.texts[j]), template=text)
            v.slot_a, v.slot_b = subject.slots[i], subject.slots[j]
            return v

        verdicts = await asyncio.gather(*(one(judge, i, j) for judge in chosen for i, j in pairs))
        rows = [_pair_row(v, comparison_id=subject.comparison_id, slot_a=v.slot_a, slot_b=v.slot_b) for v in verdicts]
        try:
            await self.s.db(store.add_verdicts, owner=owner, verdicts=rows)
        except StorageError as e:
            raise JudgeProblem(f"The judges answered, but their verdicts could not be saved: {e.message}") from e
        hidden = subject.blind and not subject.voted
        shown = [self._shown(v, hidden) for v in verdicts]
        return ComparisonJudging(str(subject.comparison_id), hidden, shown, calls, _total([v.cost for v in verdicts]))

    @staticmethod
    def _shown(v: PairVerdict, hidden: bool) -> dict[str, Any]:
        """A verdict as the user may see it: panes by letter; model names only once a blind run is voted."""
        assert v.slot_a is not None and v.slot_b is not None
        pane = {"a": blind_label(v.slot_a), "b": blind_label(v.slot_b), "tie": "tie", "none": "no verdict"}
        out = {"judge": v.judge, "pane_a": blind_label(v.slot_a), "pane_b": blind_label(v.slot_b),
               "model_a": None if hidden else v.model_a, "model_b": None if hidden else v.model_b,
               "verdict_ab": v.verdict_ab, "verdict_ba": v.verdict_ba, "final": v.final, "winner": pane[v.final],
               "consistent": v.consistent, "cost": v.cost, "error": v.error,
               "raw_ab": v.raw_ab, "raw_ba": v.raw_ba, "template_hash": template_hash(v.template)}
        return out

    async def verdicts(self, *, owner: str, comparison_id: Any) -> list[store.JudgeVerdictPublic]:
        """The stored verdicts on one comparison (no names before a blind vote)."""
        try:
            return await self.s.db(store.comparison_verdicts, owner=owner, comparison_id=comparison_id)
        except NotFound as e:
            raise JudgeProblem(e.message) from e

    # -- a batch run --------------------------------------------------------------------------------

    async def judge_batch(self, *, owner: str, request: Any, run_id: str, items: Sequence[BatchItem], judges: Any,
                          rubric: bool = False, template: Any = None,
                          prices: PriceTable | None = None) -> tuple[list[PairVerdict], list[RubricScore], dict[str, Any]]:
        """Every judge on every model pair of every prompt of a finished run (and the rubric), charged to the batch budget."""
        chosen = self.resolve(judges)
        text = self.template(template)
        calls = batch_calls(items, len(chosen), rubric=rubric)
        if calls == 0:
            raise JudgeProblem("This run has no prompt with two answers to judge. Nothing was sent.")
        await self._charge(request, owner, calls, batch=True)
        verdicts, scores = await judge_batch(self.panel(chosen, prices), items, rubric=rubric, template=text)
        rows = [*(_pair_row(v, batch_run=run_id, batch_prompt=v.prompt_id) for v in verdicts),
                *(_rubric_row(s, batch_run=run_id, batch_prompt=s.prompt_id) for s in scores)]
        try:
            await self.s.db(store.add_verdicts, owner=owner, verdicts=rows)
        except StorageError as e:
            raise JudgeProblem(f"The judges answered, but their verdicts could not be saved: {e.message}") from e
        return verdicts, scores, judge_summary(verdicts, scores)

    async def judge_run(self, *, owner: str, request: Any, run_id: str, out_path: Path, summary_path: Path | None,
                        judges: Any, rubric: bool = False, template: Any = None) -> BatchJudging:
        """Judge a finished Batch-tab run from its results file; the verdicts go to the database, a
        `batch-judges.jsonl` beside the results, and the run's summary JSON (its `judges` key, as the CLI's)."""
        rows = await asyncio.to_thread(lambda: latest_rows(read_results(out_path)))
        verdicts, scores, summary = await self.judge_batch(owner=owner, request=request, run_id=run_id,
                                                           items=batch_items(rows), judges=judges, rubric=rubric,
                                                           template=template)
        path = out_path.with_name("batch-judges.jsonl")

        def write() -> None:
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in JudgedRun(verdicts, scores).rows()),
                            encoding="utf-8")
            if summary_path is not None and summary_path.exists():
                doc = json.loads(summary_path.read_text(encoding="utf-8"))
                doc["judges"] = summary
                summary_path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

        await asyncio.to_thread(write)
        cost = _total([*(v.cost for v in verdicts), *(x.cost for x in scores)])
        return BatchJudging(JudgedRun(verdicts, scores), summary, 2 * len(verdicts) + len(scores), cost, path)

    # -- the judge leaderboard and audit -----------------------------------------------------------

    async def board(self, *, owner: str) -> JudgeBoard:
        """Per judge: BT ratings over its own verdicts (never the human votes) and its audit against the user's votes."""
        rows = await self.s.db(store.judge_verdicts, owner=owner)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.s.executor, partial(build_judge_board, rows))


def build_judge_board(rows: Sequence[store.JudgeVerdictPublic], *, rounds: int = BOARD_ROUNDS) -> JudgeBoard:
    """The judge leaderboard from stored verdicts (seeded: the same verdicts, the same board)."""
    pairs = [r for r in rows if r.kind == "pair" and r.model_a and r.model_b]
    boards: dict[str, tuple[Leaderboard, dict[str, str]]] = {}
    costs: dict[str, float | None] = {}
    for judge in sorted({r.judge for r in rows}):
        votes = [Vote(r.model_a, r.model_b, r.final) for r in pairs  # type: ignore[arg-type]  # final is a/b/tie here
                 if r.judge == judge and r.final in ("a", "b", "tie") and r.model_a and r.model_b and r.model_a != r.model_b]
        board = leaderboard(votes, rounds=rounds if votes else 0, seed=0)
        ranges = rank_ranges([x.ci_low for x in board.ratings], [x.ci_high for x in board.ratings])
        boards[judge] = (board, {x.model: rank_label(*rg) for x, rg in zip(board.ratings, ranges, strict=True)})
        costs[judge] = _total([r.cost_usd for r in rows if r.judge == judge])
    found = audits(JudgedPair(r.judge, r.final, r.consistent, r.human) for r in pairs)
    return JudgeBoard(boards, [a.as_dict() for a in found], costs)
