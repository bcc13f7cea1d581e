"""The Batch tab's "Judge this run": judge models (and the rubric) on the session's finished run. Thin:
core/judges.py judges, charges the batch budget, stores the verdicts and writes the run's judge file."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from core.batch import Batches, BatchRun
from core.identity import owner_for
from core.judges import MAX_JUDGES, JudgeProblem, Judges
from ui.context import TabContext
from ui.exports import exports_for

JUDGE_COLUMNS = ["Judge", "Model", "Win rate", "Wins / losses / ties", "Rubric (0–1)", "Consistency"]
Update = dict[Any, Any]


def judges_frame(summary: dict[str, Any]) -> pd.DataFrame:
    """Per judge and model: the win rate over its pairwise verdicts (ties half), the mean rubric score, consistency."""
    rows = []
    for judge, s in summary.items():
        for model in sorted(set(s["win_rates"]) | set(s["rubric"])):
            w = s["win_rates"].get(model)
            r = s["rubric"].get(model, {}).get("mean")
            rows.append({"Judge": judge, "Model": model, "Win rate": "–" if w is None else f"{w['win_rate']:.0%}",
                         "Wins / losses / ties": "–" if w is None else f"{w['wins']} / {w['losses']} / {w['ties']}",
                         "Rubric (0–1)": "–" if r is None else f"{r:.3f}",
                         "Consistency": "–" if s["consistency"] is None else f"{s['consistency']:.0%}"})
    return pd.DataFrame(rows, columns=JUDGE_COLUMNS)


@dataclass
class BatchJudges:
    """The section's components and its handler (tests call `judge`)."""

    judges: gr.Dropdown
    rubric: gr.Checkbox
    button: gr.Button
    status: gr.Markdown
    table: gr.Dataframe
    download: gr.File
    use_case: Judges
    batches: Batches

    async def judge(self, judges: list[str] | None, rubric: bool, run: BatchRun | None, owner_state: str | None,
                    request: gr.Request, profile: gr.OAuthProfile | None = None) -> Update:
        owner = owner_for(request, profile, owner_state)
        if not isinstance(run, BatchRun) or run.owner != owner:
            return {self.status: "⚠️ Run a batch first: the judges grade its finished answers."}
        if run.id in self.batches.active:
            return {self.status: "⚠️ Wait for the run to finish (or stop it), then judge it."}
        try:
            done = await self.use_case.judge_run(owner=owner, request=request, run_id=run.id, out_path=run.out_path,
                                                 summary_path=run.summary_path, judges=judges or [], rubric=bool(rubric))
        except JudgeProblem as e:
            return {self.status: f"⚠️ {html.escape(e.message)}"}
        cost = "unpriced" if done.cost is None else f"${done.cost:.4f}"
        unparsed = sum(s["unparsed"] for s in done.summary.values())
        status = (f"⚖️ {done.calls} judge calls, cost {cost}. Each pair was judged in both orders; a verdict that flips "
                  "is a tie." + (f" {unparsed} verdict(s) could not be read." if unparsed else "")
                  + " The summary download now holds `judges` too.")
        return {self.status: status, self.table: gr.update(value=judges_frame(done.summary), visible=True),
                self.download: gr.update(value=str(exports_for(self.use_case.s).copy(owner, done.path)), visible=True)}


def build_batch_judges(ctx: TabContext, batches: Batches, run_state: gr.State) -> BatchJudges:
    """The "Judge this run" accordion, under the run's results."""
    with gr.Accordion("⚖️ Judge this run", open=False, elem_id="batch-judges"):
        gr.Markdown("Judge models grade every two models' answers to each prompt, without their names and in both "
                    "orders; with the rubric they also rate each answer 1–10. Each judge call counts against your batch "
                    "budget.", elem_classes=["parley-muted"])
        with gr.Row():
            judges = gr.Dropdown(choices=ctx.model_choices, value=[], multiselect=True, max_choices=MAX_JUDGES,
                                 allow_custom_value=True, label=f"Judge models (up to {MAX_JUDGES})", scale=3,
                                 elem_id="batch-judges-models")
            rubric = gr.Checkbox(label="Rubric score (1–10) per answer", value=False, scale=1, elem_id="batch-judges-rubric")
        button = gr.Button("⚖️ Judge this run", size="sm", elem_id="batch-judges-run")
        status = gr.Markdown("", elem_id="batch-judges-status")
        table = gr.Dataframe(headers=JUDGE_COLUMNS, interactive=False, visible=False, elem_id="batch-judges-table")
        download = gr.File(label="Judge verdicts (JSONL)", visible=False, interactive=False, elem_id="batch-judges-file")
    part = BatchJudges(judges, rubric, button, status, table, download, Judges(ctx.services, batches.prices), batches)
    button.click(part.judge, [judges, rubric, run_state, ctx.owner], [status, table, download], api_visibility="private")
    return part
