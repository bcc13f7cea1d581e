"""The batch tab: run every prompt of an uploaded file through several models; results are downloads.

The layout and thin handlers only: validation, the batch budget, starting and stopping a run and its
files are core/batch.py's `Batches` (which runs compare/batch.py's engine). Batch results are not
stored in the database (and so are not in the dashboard): the JSONL file of a run is its record.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from chat.errors import ChatError
from chat.types import Params, param_bounds
from compare.batch import BatchSummary, read_results, summarize
from core.batch import (
    MAX_CALLS,
    MAX_CONCURRENCY,
    MAX_MODELS,
    PROMPT_SUFFIXES,
    Batches,
    BatchInputError,
    BatchRun,
    ResultsTail,
)
from core.identity import owner_for
from core.services import Services
from ui.batch_experiment import ExperimentHandlers, build_experiment_part
from ui.batch_judges import BatchJudges, build_batch_judges
from ui.batch_scores import PAIRED_COLUMNS, SCORE_COLUMNS, has_scores, paired_frame, scores_frame, scores_plot
from ui.context import TabContext
from ui.exports import exports_for
from ui.files import in_upload_folder
from ui.params import unchecked

#: result rows shown on the page (the downloads hold all of them)
PREVIEW_ROWS = 50
POLL_SECONDS = 0.4

SUMMARY_COLUMNS = ["Model", "Done", "Errors", "TTFT p50 (s)", "TTFT p95 (s)", "Tok/s (median)",
                   "Tokens in", "Tokens out", "Cost ($)"]
RESULT_COLUMNS = ["Prompt id", "Model", "Prompt", "Reply", "Error", "Score", "TTFT (s)", "Tok/s", "Tokens out"]

Update = dict[Any, Any]


# -- formatting -----------------------------------------------------------------------------------


def _s(ms: Any) -> float | None:
    return None if not isinstance(ms, (int, float)) else round(ms / 1000, 3)


def _cut(value: Any, n: int = 240) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def _checks_passed(checks: Any) -> str:
    if not isinstance(checks, list) or not checks:
        return ""
    return f"{sum(1 for c in checks if isinstance(c, dict) and c.get('passed'))}/{len(checks)}"


def summary_frame(summary: BatchSummary) -> pd.DataFrame:
    rows = [{
        "Model": m.model,
        "Done": m.done,
        "Errors": m.errors,
        "TTFT p50 (s)": _s(m.ttft_p50_ms),
        "TTFT p95 (s)": _s(m.ttft_p95_ms),
        "Tok/s (median)": None if m.tokens_per_second_median is None else round(m.tokens_per_second_median, 1),
        "Tokens in": m.input_tokens,
        "Tokens out": m.output_tokens,
        "Cost ($)": None if m.cost is None else round(m.cost, 6),
    } for m in summary.models]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def results_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    shown = [{
        "Prompt id": r.get("prompt_id"),
        "Model": r.get("model"),
        "Prompt": _cut(r.get("prompt"), 160),
        "Reply": _cut(r.get("text")),
        "Error": r.get("error") or "",
        # Share of the prompt's checks passed, as "2/3" (empty: no checks, or an error row).
        "Score": _checks_passed(r.get("checks")),
        "TTFT (s)": _s(r.get("ttft_ms")),
        "Tok/s": round(r["tokens_per_second"], 1) if isinstance(r.get("tokens_per_second"), (int, float)) else None,
        "Tokens out": r.get("output_tokens"),
    } for r in rows[:PREVIEW_ROWS]]
    return pd.DataFrame(shown, columns=RESULT_COLUMNS)


def progress_markdown(done: int, errors: int, total: int, elapsed: float, *, state: str = "running") -> str:
    """The status line: "12/40 done, 1 error", with a bar while it runs."""
    err = f"{errors} error{'s' if errors != 1 else ''}"
    icon, head = {"running": ("⏳", "Running"), "finished": ("✅", "Finished"), "stopped": ("⏹", "Stopped")}[state]
    line = f"{icon} **{head}**: {done}/{total} done, {err} · {elapsed:.1f} s"
    if state == "running":
        width = 30
        filled = round(width * done / total) if total else width
        line += "\n\n" + "▰" * filled + "▱" * (width - filled)
    return line


# -- handlers -------------------------------------------------------------------------------------


@dataclass
class BatchView:
    """Named handles on the batch tab's components."""

    file: gr.File
    #: The files the prompts name (`"files": ["chart.png"]`), matched by file name.
    attachments: gr.File
    models: gr.Dropdown
    concurrency: gr.Slider
    system: gr.Textbox
    max_tokens: gr.Number
    run_button: gr.Button
    stop_button: gr.Button
    status: gr.Markdown
    summary: gr.Dataframe
    results: gr.Dataframe
    downloads: gr.File
    output_group: gr.Column
    #: Shown when the prompts had a reference or checks: mean scores (plot and table) and paired comparisons.
    scores_group: gr.Column
    scores_plot: gr.HTML
    scores: gr.Dataframe
    paired: gr.Dataframe
    run_state: gr.State
    owner: gr.State

    def inputs(self) -> list[Any]:
        return [self.file, self.models, self.concurrency, self.system, self.max_tokens, self.run_state, self.owner, self.attachments]

    def outputs(self) -> list[Any]:
        return [self.status, self.summary, self.results, self.downloads, self.output_group,
                self.run_button, self.stop_button, self.run_state, self.scores_group, self.scores_plot, self.scores, self.paired]


class BatchHandlers:
    """The tab's handlers: read the inputs, call `Batches`, render what it gives."""

    def __init__(self, batches: Batches, view: BatchView):
        self.batches = batches
        self.view = view

    @property
    def s(self) -> Services:
        return self.batches.s

    @property
    def root(self) -> Path | None:
        return self.batches.root

    @root.setter
    def root(self, value: Path | None) -> None:
        self.batches.root = value

    @property
    def _active(self) -> dict[str, Any]:
        return self.batches.active

    def _idle(self, message: str, run: BatchRun | None = None) -> Update:
        v = self.view
        return {v.status: message, v.summary: gr.skip(), v.results: gr.skip(), v.downloads: gr.skip(),
                v.output_group: gr.skip(), v.run_button: gr.update(interactive=True),
                v.stop_button: gr.update(visible=False), v.run_state: run, v.scores_group: gr.skip(),
                v.scores_plot: gr.skip(), v.scores: gr.skip(), v.paired: gr.skip()}

    def _render(self, run: BatchRun, rows: list[dict[str, Any]], *, state: str,
                summary: BatchSummary | None = None) -> Update:
        """Everything the page shows for a run: status, per-model summary, first rows, downloads."""
        v = self.view
        if summary is None:
            summary = summarize(rows, models=run.models)
        done = len(rows)
        errors = sum(1 for r in rows if r.get("error") is not None)
        status = progress_markdown(done, errors, run.total, time.monotonic() - run.started, state=state)
        running = state == "running"
        files: Any = gr.skip()
        if not running:
            paths = self.batches.write_csv(run, summary)
            # Copies in the export store: short-lived and their owner's only (ui/exports.py).
            exports = exports_for(self.s)
            files = [str(exports.copy(run.owner, p)) for p in paths] or None
            if state == "stopped" and done < run.total:
                status += f"\n\n{run.total - done} call(s) were not run. The downloads hold the {done} finished row(s)."
        return {
            v.status: status,
            v.summary: summary_frame(summary),
            v.results: results_frame(summary.rows if not running else rows),
            v.downloads: files,
            v.output_group: gr.update(visible=True),
            v.run_button: gr.update(interactive=not running),
            v.stop_button: gr.update(visible=running),
            v.run_state: run,
            v.scores_group: gr.update(visible=has_scores(summary)),
            v.scores_plot: scores_plot(summary),
            v.scores: scores_frame(summary),
            v.paired: paired_frame(summary),
        }

    async def run(self, file: str | None, models: list[str] | None, concurrency: Any, system: str | None,
                  max_tokens: Any, previous: BatchRun | None, owner_state: str | None, request: gr.Request,
                  profile: gr.OAuthProfile | None = None, attachments: list[str] | None = None) -> AsyncGenerator[Update, None]:
        """Validate, charge its calls to the batch budget, run the batch and stream its progress and results."""
        owner = owner_for(request, profile, owner_state)
        previous = previous if isinstance(previous, BatchRun) and previous.owner == owner else None
        files = [f for f in attachments or [] if isinstance(f, str)]
        try:
            if any(not in_upload_folder(f) for f in files):
                raise BatchInputError("A file for the prompts is not an upload; attach it again.")
            # In a worker thread: the prompts' files are read and checked before anything is charged.
            job = await self.batches.prepare(file, models, concurrency, system, max_tokens, files)
            self.batches.check_idle(owner)
            await self.batches.charge(request, owner, job)
        except BatchInputError as e:
            yield self._idle(f"⚠️ {html.escape(e.message)}", previous)
            return

        run, task = self.batches.start(owner, job, previous)
        tail = ResultsTail(run.out_path)
        try:
            yield self._render(run, [], state="running")
            while not task.done():
                await asyncio.wait({task}, timeout=POLL_SECONDS)
                if not task.done():
                    yield self._render(run, tail.poll(), state="running")
            if task.cancelled():
                yield self._render(run, read_results(run.out_path), state="stopped")
                return
            try:
                summary = task.result()
            except ChatError as e:  # run_batch refuses bad input before calling anything
                yield self._idle(f"⚠️ {html.escape(e.message)}", run)
                return
            self.batches.finished(run, summary)
            yield self._render(run, summary.rows, state="finished", summary=summary)
        finally:
            # Stop (or a closed page) cancels us: end the run too; finished rows stay in the file.
            await self.batches.end(run.id)

    async def stop(self, run: BatchRun | None, owner_state: str | None, request: gr.Request,
                   profile: gr.OAuthProfile | None = None) -> Update:
        """End this owner's running batch and show the rows that finished."""
        owner = owner_for(request, profile, owner_state)
        if not isinstance(run, BatchRun) or run.owner != owner:
            return self._idle("Nothing is running.", None)
        await self.batches.stop(run, owner)
        return self._render(run, read_results(run.out_path), state="stopped")


@dataclass
class BatchTab(BatchView):
    """The built tab: its components, and the handlers behind them (tests call them directly)."""

    handlers: BatchHandlers
    #: "Open an experiment file": show one read-only, replay it (ui/batch_experiment.py).
    experiment: ExperimentHandlers | None = None
    #: "Judge this run": judge models on the finished run (ui/batch_judges.py).
    judges: BatchJudges | None = None


# -- layout ---------------------------------------------------------------------------------------


EXAMPLE_FILE = """{"id": "q1", "prompt": "Name three prime numbers."}
{"id": "q2", "prompt": "Translate 'good morning' into French.", "system": "Answer in one line."}
{"id": "q3", "prompt": "What does this chart show?", "files": ["chart.png"]}
{"id": "q4", "prompt": "What is 6 × 7? Answer with the number.", "reference": "42"}
{"id": "q5", "prompt": "Give a JSON object with a name.", "checks": [{"type": "json_schema", "schema": {"type": "object", "required": ["name"]}}]}"""


def build_batch_tab(ctx: TabContext) -> BatchTab:
    """Upload prompts, pick models, run; a live status line, a per-model summary, first rows, downloads."""
    batches = Batches(ctx.services)
    lo, hi = param_bounds("max_tokens")
    gr.Markdown(
        "### Batch runs\n<span class='parley-muted'>Every prompt of a file through up to "
        f"{MAX_MODELS} models ({MAX_CALLS:,} calls at most per run). Results are downloads (JSONL, CSV, a summary "
        "and an experiment file you can open and replay below); "
        "they are not saved in your history or the dashboard.</span>"
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            file = gr.File(label="Prompts file (.jsonl or .txt)", file_types=list(PROMPT_SUFFIXES), type="filepath",
                           elem_id="batch-file", height=150)
            attachments = gr.File(label="Files the prompts name (optional)", file_count="multiple", type="filepath",
                                  elem_id="batch-attachments", height=110)
            with gr.Accordion("File format", open=False):
                gr.Markdown("JSONL, one object per line (`id`, `system` and `files` optional):\n"
                            f"```json\n{EXAMPLE_FILE}\n```\nor a `.txt` file with one prompt per line. A prompt's "
                            "`files` are names of files uploaded beside the prompts file (images, PDFs, text). "
                            "A `reference` (exact match, ignoring case and surrounding spaces) and `checks` (`exact`, "
                            "`contains`, `regex`, `number`, `json_valid`, `json_schema`) score each reply: its score is "
                            "the share of checks passed, and models run on the same prompts are compared pair by pair.")
        with gr.Column(scale=3):
            models = gr.Dropdown(
                # Empty: a run calls exactly the models the user adds (the sidebar's model may be an expensive one).
                choices=ctx.model_choices, value=[], multiselect=True,
                allow_custom_value=True, max_choices=MAX_MODELS, label="Models",
                info=f"1 to {MAX_MODELS}; type provider:model for one that is not listed", elem_id="batch-models",
            )
            with gr.Row():
                # unchecked: the raw value reaches core/batch.py, whose message names what is wrong
                # (Gradio's own check would fail the event with a bare "Error").
                concurrency = unchecked(gr.Slider(1, MAX_CONCURRENCY, value=4, step=1, label="Concurrency",
                                                  info="Replies generated at once", elem_id="batch-concurrency"))
                max_tokens = unchecked(gr.Number(value=Params.model_fields["max_tokens"].default, label="Max tokens",
                                                 precision=0, minimum=lo, maximum=hi, info="Longest reply, in tokens",
                                                 elem_id="batch-max-tokens"))
            system = gr.Textbox(label="System prompt", lines=2, max_lines=6, elem_id="batch-system",
                                placeholder="Optional; a prompt's own \"system\" wins")
            with gr.Row():
                run_button = gr.Button("▶ Run batch", variant="primary", elem_id="batch-run")
                stop_button = gr.Button("⏹ Stop", variant="stop", visible=False, elem_id="batch-stop")
    status = gr.Markdown("", elem_id="batch-status")
    with gr.Column(visible=False, elem_id="batch-output") as output_group:
        summary = gr.Dataframe(headers=SUMMARY_COLUMNS, interactive=False, label="Per model",
                               elem_id="batch-summary", max_height=300, wrap=True,
                               column_widths=["22%", "7%", "7%", "10%", "10%", "12%", "10%", "11%", "11%"])
        downloads = gr.File(label="Download results", file_count="multiple", interactive=False,
                            elem_id="batch-downloads")
        with gr.Column(visible=False, elem_id="batch-scores") as scores_group:
            gr.Markdown("#### Scores\n<span class='parley-muted'>Mean share of checks passed, with its 95% interval; "
                        "each pair compared on the prompts both answered (a sign test; Holm's p allows for the number "
                        "of pairs, and the verdict uses it).</span>")
            scores_plot_html = gr.HTML(elem_id="batch-scores-plot")
            scores = gr.Dataframe(headers=SCORE_COLUMNS, interactive=False, label="Score per model", elem_id="batch-score-table",
                                  wrap=True)
            # Not wrapped: nine columns squeezed onto a phone become one letter per line; this one scrolls sideways.
            paired = gr.Dataframe(headers=PAIRED_COLUMNS, interactive=False, elem_id="batch-paired",
                                  label="Paired comparisons (p: exact sign test on the prompts where A and B differ)")
        results = gr.Dataframe(headers=RESULT_COLUMNS, interactive=False, wrap=True, max_height=480,
                               label=f"Results (first {PREVIEW_ROWS} rows)", elem_id="batch-results",
                               column_widths=["7%", "13%", "15%", "28%", "12%", "6%", "7%", "6%", "6%"])
    # The session's last run; its directory goes when the next run starts or the session ends.
    # A lambda, not the bound method: Gradio deep-copies the page config on every load, and a bound
    # method would drag the handler's services (SDK clients, locks) into that copy.
    run_state = gr.State(None, delete_callback=lambda run: batches.discard(run))
    view = BatchView(file=file, attachments=attachments, models=models, concurrency=concurrency, system=system, max_tokens=max_tokens,
                     run_button=run_button, stop_button=stop_button, status=status, summary=summary,
                     results=results, downloads=downloads, output_group=output_group, run_state=run_state,
                     owner=ctx.owner, scores_group=scores_group, scores_plot=scores_plot_html, scores=scores, paired=paired)
    handlers = BatchHandlers(batches, view)
    running = run_button.click(handlers.run, view.inputs(), view.outputs(), api_visibility="private",
                               concurrency_limit=4, concurrency_id="batch", show_progress="hidden")
    stop_button.click(handlers.stop, [run_state, ctx.owner], view.outputs(), cancels=[running],
                      api_visibility="private", show_progress="hidden")
    judges = build_batch_judges(ctx, batches, run_state)
    experiment = build_experiment_part(batches, ctx.owner, run_state)
    return BatchTab(**vars(view), handlers=handlers, experiment=experiment, judges=judges)
