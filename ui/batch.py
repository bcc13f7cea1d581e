"""The batch tab: run every prompt of an uploaded file through several models; results are downloads.

Batch results are not stored in the database (and so are not in the dashboard): the JSONL file of a run
is its record. Each run writes into its own fresh temp directory (random name, mode 0700); it is removed when the
session starts its next run or ends (the downloads handed out are Gradio's cached copies).
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from pydantic import ValidationError

from chat.errors import ChatError
from chat.types import Params, param_bounds
from compare.batch import BatchSummary, Prompt, load_prompts, read_results, rows_to_csv, run_batch, summarize
from compare.pricing import PriceTable
from core.identity import owner_for
from core.ratelimit import Verdict
from core.services import Services
from ui.context import TabContext
from ui.exports import exports_for

log = logging.getLogger("parley.batch_ui")

MAX_MODELS = 6
MAX_CONCURRENCY = 8
#: prompts × models per run, whatever the batch budget (BATCH_RATE_LIMIT) allows.
MAX_CALLS = 2_000
#: result rows shown on the page (the downloads hold all of them)
PREVIEW_ROWS = 50
PROMPT_SUFFIXES = (".jsonl", ".ndjson", ".json", ".txt")
POLL_SECONDS = 0.4

SUMMARY_COLUMNS = ["Model", "Done", "Errors", "TTFT p50 (s)", "TTFT p95 (s)", "Tok/s (median)",
                   "Tokens in", "Tokens out", "Cost ($)"]
RESULT_COLUMNS = ["Prompt id", "Model", "Prompt", "Reply", "Error", "TTFT (s)", "Tok/s", "Tokens out"]


class BatchInputError(ValueError):
    """A batch that cannot start; the message says what to fix."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class BatchJob:
    """A validated batch, ready to run."""

    prompts: list[Prompt]
    models: list[str]
    concurrency: int
    params: Params
    system: str | None
    file_label: str

    @property
    def calls(self) -> int:
        return len(self.prompts) * len(self.models)


def budget_message(job: BatchJob, verdict: Verdict) -> str:
    """Why a run was refused: the calls it needs and what the batch budget has left."""
    need = (f"This run needs {job.calls:,} calls ({len(job.prompts):,} prompt(s) × {len(job.models)} model(s))")
    if verdict.never:
        return f"{need}, more than the whole batch budget ({verdict.limit}). Nothing was run: use fewer prompts or models."
    return (f"{need} and {verdict.remaining:,} are left of your batch budget ({verdict.limit}). Nothing was run: "
            f"use fewer prompts or models, or wait about {verdict.wait_text}.")


@dataclass
class BatchRun:
    """One run of one owner: where its files are. Kept in the session's gr.State."""

    id: str
    owner: str
    directory: Path
    models: list[str]
    total: int
    started: float = field(default_factory=time.monotonic)

    @property
    def out_path(self) -> Path:
        return self.directory / "batch-results.jsonl"

    @property
    def csv_path(self) -> Path:
        return self.directory / "batch-results.csv"


# -- formatting -----------------------------------------------------------------------------------


def _s(ms: Any) -> float | None:
    return None if not isinstance(ms, (int, float)) else round(ms / 1000, 3)


def _cut(text: Any, n: int = 240) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


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


class _Tail:
    """Reads the rows a running batch appends to its JSONL file, whole lines only."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.rows: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self.rows
        end = chunk.rfind(b"\n")
        if end < 0:
            return self.rows
        self.offset += end + 1
        for line in chunk[: end + 1].splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                self.rows.append(row)
        return self.rows


# -- handlers -------------------------------------------------------------------------------------


@dataclass
class BatchView:
    """Named handles on the batch tab's components."""

    file: gr.File
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
    run_state: gr.State
    owner: gr.State
    handlers: "BatchHandlers" = field(repr=False, default=None)  # type: ignore[assignment]

    def inputs(self) -> list[Any]:
        return [self.file, self.models, self.concurrency, self.system, self.max_tokens, self.run_state, self.owner]

    def outputs(self) -> list[Any]:
        return [self.status, self.summary, self.results, self.downloads, self.output_group,
                self.run_button, self.stop_button, self.run_state]


class BatchHandlers:
    def __init__(self, services: Services, prices: PriceTable | None = None, root: Path | None = None):
        """`root`: where run directories are made (default: the system temp dir)."""
        self.s = services
        self.prices = prices if prices is not None else PriceTable.from_env()
        self.root = root
        self.view: BatchView | None = None
        # run id -> the task running it, so Stop can end it even when Gradio has already let go of the
        # generator; also how one owner is kept to one run at a time.
        self._active: dict[str, tuple[str, asyncio.Task[BatchSummary]]] = {}

    # -- validation ----------------------------------------------------------------------------

    def validate(self, file: str | None, models: list[str] | str | None, concurrency: Any,
                 system: str | None, max_tokens: Any) -> BatchJob:
        """Check everything before a call is made; BatchInputError says what to fix."""
        if not file:
            raise BatchInputError("Upload a prompts file first (.jsonl with one {\"prompt\": ...} object per line, or .txt with one prompt per line).")
        path = Path(file)
        label = path.name
        if path.suffix.lower() not in PROMPT_SUFFIXES:
            raise BatchInputError(f"{label}: prompts files must be .jsonl or .txt (one prompt per line).")
        limit = self.s.config.max_upload_bytes
        try:
            size = path.stat().st_size
        except OSError as e:
            raise BatchInputError(f"The upload could not be read ({e.strerror or e}); upload it again.") from e
        if size > limit:
            raise BatchInputError(f"{label} is {size / 1e6:.1f} MB; prompts files are limited to {limit / 1e6:.1f} MB.")
        try:
            prompts = load_prompts(path.read_bytes(), name=label)
        except ChatError as e:
            raise BatchInputError(e.message) from e

        if isinstance(models, str):
            models = [models]
        refs: list[str] = []
        for ref in models or []:
            ref = (ref or "").strip()
            if not ref:
                continue
            try:
                _provider, info = self.s.registry.resolve(ref)
            except ChatError as e:
                raise BatchInputError(e.message) from e
            if info.ref not in refs:
                refs.append(info.ref)
        if not refs:
            raise BatchInputError("Choose at least one model (type provider:model for one that is not listed).")
        if len(refs) > MAX_MODELS:
            raise BatchInputError(f"{len(refs)} models chosen; a batch runs at most {MAX_MODELS}.")
        calls = len(prompts) * len(refs)
        if calls > MAX_CALLS:
            raise BatchInputError(f"{len(prompts):,} prompts × {len(refs)} models = {calls:,} calls; a run is limited to "
                                  f"{MAX_CALLS:,}. Split the file or choose fewer models.")
        try:
            conc = int(concurrency if concurrency is not None else 4)
        except (TypeError, ValueError) as e:
            raise BatchInputError(f"Concurrency must be a whole number from 1 to {MAX_CONCURRENCY}.") from e
        if not 1 <= conc <= MAX_CONCURRENCY:
            raise BatchInputError(f"Concurrency must be from 1 to {MAX_CONCURRENCY}, got {conc}.")
        try:
            params = Params() if max_tokens in (None, "") else Params(max_tokens=int(max_tokens))
        except (ValidationError, ValueError, TypeError) as e:
            lo, hi = param_bounds("max_tokens")
            raise BatchInputError(f"Max tokens must be a whole number from {lo:,} to {hi:,} (or empty for the default).") from e
        system = (system or "").strip() or None
        return BatchJob(prompts, refs, conc, params, system, label)

    # -- running -------------------------------------------------------------------------------

    def _new_run(self, owner: str, job: BatchJob) -> BatchRun:
        if self.root is not None:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdtemp: a random name created 0700, so no other user or session can guess or share it.
        directory = Path(tempfile.mkdtemp(prefix="parley-batch-", dir=self.root))
        return BatchRun(id=secrets.token_urlsafe(12), owner=owner, directory=directory,
                        models=job.models, total=job.calls)

    def _discard(self, run: Any) -> None:
        """Remove a finished run's directory (the downloads already handed out are Gradio's copies)."""
        if not isinstance(run, BatchRun) or run.id in self._active:
            return
        shutil.rmtree(run.directory, ignore_errors=True)

    def _idle(self, message: str, run: BatchRun | None = None) -> dict[Any, Any]:
        v = self.view
        assert v is not None
        return {v.status: message, v.summary: gr.skip(), v.results: gr.skip(), v.downloads: gr.skip(),
                v.output_group: gr.skip(), v.run_button: gr.update(interactive=True),
                v.stop_button: gr.update(visible=False), v.run_state: run}

    def _render(self, run: BatchRun, rows: list[dict[str, Any]], *, state: str,
                summary: BatchSummary | None = None) -> dict[Any, Any]:
        """Everything the page shows for a run: status, per-model summary, first rows, downloads."""
        v = self.view
        assert v is not None
        if summary is None:
            summary = summarize(rows, models=run.models)
        done = len(rows)
        errors = sum(1 for r in rows if r.get("error") is not None)
        status = progress_markdown(done, errors, run.total, time.monotonic() - run.started, state=state)
        running = state == "running"
        files: Any = gr.skip()
        if not running:
            run.csv_path.write_text(rows_to_csv(summary.rows), encoding="utf-8")
            # Copies in the export store: short-lived and their owner's only (ui/exports.py).
            exports = exports_for(self.s)
            files = [str(exports.copy(run.owner, run.out_path)), str(exports.copy(run.owner, run.csv_path))] if run.out_path.exists() else None
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
        }

    async def run(self, file: str | None, models: list[str] | None, concurrency: Any, system: str | None,
                  max_tokens: Any, previous: BatchRun | None, owner_state: str | None, request: gr.Request,
                  profile: gr.OAuthProfile | None = None) -> AsyncIterator[dict[Any, Any]]:
        """Validate, charge its calls to the batch budget, run the batch and stream its progress and results."""
        owner = owner_for(request, profile, owner_state)
        previous = previous if isinstance(previous, BatchRun) and previous.owner == owner else None
        try:
            job = self.validate(file, models, concurrency, system, max_tokens)
        except BatchInputError as e:
            yield self._idle(f"⚠️ {html.escape(e.message)}", previous)
            return
        if any(o == owner for o, _ in self._active.values()):
            yield self._idle("⚠️ A batch of yours is already running (perhaps in another tab): stop it or wait for it to finish.", previous)
            return
        # Every call of the run is counted before it starts, against the batch budget (BATCH_RATE_LIMIT).
        verdict = await self.s.limiter.charge(self.s.limiter.identity(request, owner), calls=job.calls, budget="batch")
        if not verdict.allowed:
            yield self._idle(f"⚠️ {html.escape(budget_message(job, verdict))}", previous)
            return

        self._discard(previous)
        run = self._new_run(owner, job)
        task = asyncio.ensure_future(run_batch(
            self.s.registry, job.prompts, job.models, out_path=run.out_path, concurrency=job.concurrency,
            params=job.params, policy=self.s.policy, system=job.system, prices=self.prices,
        ))
        self._active[run.id] = (owner, task)
        log.info(json.dumps({"event": "batch_start", "owner": owner, "run": run.id, "prompts": len(job.prompts),
                             "models": job.models, "concurrency": job.concurrency}))
        tail = _Tail(run.out_path)
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
            log.info(json.dumps({"event": "batch_end", "owner": owner, "run": run.id, "ran": summary.ran,
                                 "errors": summary.run_errors, "elapsed_s": round(summary.elapsed_s or 0, 2)}))
            yield self._render(run, summary.rows, state="finished", summary=summary)
        finally:
            # Stop (or a closed page) cancels us: end the run too; finished rows stay in the file.
            await self._end(run.id)

    async def _end(self, run_id: str) -> None:
        entry = self._active.pop(run_id, None)
        if entry is None:
            return
        task = entry[1]
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def stop(self, run: BatchRun | None, owner_state: str | None, request: gr.Request,
                   profile: gr.OAuthProfile | None = None) -> dict[Any, Any]:
        """End this owner's running batch and show the rows that finished."""
        owner = owner_for(request, profile, owner_state)
        if not isinstance(run, BatchRun) or run.owner != owner:
            return self._idle("Nothing is running.", None)
        entry = self._active.get(run.id)
        if entry is not None and entry[0] == owner:
            await self._end(run.id)
        return self._render(run, read_results(run.out_path), state="stopped")


# -- layout ---------------------------------------------------------------------------------------


EXAMPLE_FILE = """{"id": "q1", "prompt": "Name three prime numbers."}
{"id": "q2", "prompt": "Translate 'good morning' into French.", "system": "Answer in one line."}"""


def build_batch_tab(ctx: TabContext) -> BatchView:
    """Upload prompts, pick models, run; a live status line, a per-model summary, first rows, downloads."""
    handlers = BatchHandlers(ctx.services)
    lo, hi = param_bounds("max_tokens")
    default_model = getattr(ctx.model, "value", None)
    gr.Markdown(
        "### Batch runs\n<span class='parley-muted'>Every prompt of a file through up to "
        f"{MAX_MODELS} models ({MAX_CALLS:,} calls at most per run). Results are downloads (JSONL and CSV); "
        "they are not saved in your history or the dashboard.</span>"
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            file = gr.File(label="Prompts file (.jsonl or .txt)", file_types=list(PROMPT_SUFFIXES), type="filepath",
                           elem_id="batch-file", height=150)
            with gr.Accordion("File format", open=False):
                gr.Markdown("JSONL, one object per line (`id` and `system` optional):\n"
                            f"```json\n{EXAMPLE_FILE}\n```\nor a `.txt` file with one prompt per line.")
        with gr.Column(scale=3):
            models = gr.Dropdown(
                choices=ctx.model_choices, value=[default_model] if default_model else [], multiselect=True,
                allow_custom_value=True, max_choices=MAX_MODELS, label="Models",
                info=f"1 to {MAX_MODELS}; type provider:model for one that is not listed", elem_id="batch-models",
            )
            with gr.Row():
                concurrency = gr.Slider(1, MAX_CONCURRENCY, value=4, step=1, label="Concurrency",
                                        info="Replies generated at once", elem_id="batch-concurrency")
                max_tokens = gr.Number(value=Params.model_fields["max_tokens"].default, label="Max tokens",
                                       precision=0, minimum=lo, maximum=hi, info="Longest reply, in tokens",
                                       elem_id="batch-max-tokens")
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
        results = gr.Dataframe(headers=RESULT_COLUMNS, interactive=False, wrap=True, max_height=480,
                               label=f"Results (first {PREVIEW_ROWS} rows)", elem_id="batch-results",
                               column_widths=["7%", "13%", "16%", "30%", "13%", "7%", "7%", "7%"])
    # The session's last run; its directory goes when the next run starts or the session ends.
    # A lambda, not the bound method: Gradio deep-copies the page config on every load, and a bound
    # method would drag the handler's services (SDK clients, locks) into that copy.
    run_state = gr.State(None, delete_callback=lambda run: handlers._discard(run))
    view = BatchView(file=file, models=models, concurrency=concurrency, system=system, max_tokens=max_tokens,
                     run_button=run_button, stop_button=stop_button, status=status, summary=summary,
                     results=results, downloads=downloads, output_group=output_group, run_state=run_state,
                     owner=ctx.owner, handlers=handlers)
    handlers.view = view
    running = run_button.click(handlers.run, view.inputs(), view.outputs(), api_visibility="private",
                               concurrency_limit=4, concurrency_id="batch", show_progress="hidden")
    stop_button.click(handlers.stop, [run_state, ctx.owner], view.outputs(), cancels=[running],
                      api_visibility="private", show_progress="hidden")
    return view
