"""The Batch tab's "Open an experiment file" part: show a file read-only, replay it, show the per-prompt diff.

Thin handlers over core/experiment.py (reading, checking and diffing files) and core/batch.py's `Batches`
(a replay is charged and run like any batch). Opening writes nothing to the database and starts nothing.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from gradio.events import api

from chat.errors import ChatError
from core.batch import Batches, BatchInputError, BatchRun, ResultsTail
from core.experiment import (
    DIFF_NAME,
    ExperimentError,
    describe,
    dumps,
    finish_replay,
    open_file,
    open_text,
    results_rows,
    start_replay,
)
from core.identity import owner_for
from ui.exports import exports_for

# The short columns first: on a narrow screen the long texts scroll sideways, the verdict stays in view.
SHOWN_COLUMNS = ["Prompt id", "Model", "Score", "Prompt", "Output", "Error", "Version", "SDK"]
DIFF_COLUMNS = ["Prompt id", "Model", "Change", "Old score", "New score", "Old output", "New output"]
POLL_SECONDS = 0.4
Update = dict[Any, Any]


def _cut(value: Any, n: int = 240) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def shown_frame(doc: dict[str, Any]) -> pd.DataFrame:
    rows = [{"Prompt id": r["prompt_id"], "Model": r["model"], "Prompt": _cut(r["prompt"], 160), "Output": _cut(r["text"]),
             "Score": r["score"], "Error": r["error"] or "", "Version": r["model_version"] or "", "SDK": r["sdk_version"] or ""}
            for r in results_rows(doc)]
    return pd.DataFrame(rows, columns=SHOWN_COLUMNS)


def _change(row: dict[str, Any]) -> str:
    if row["unchanged"]:
        return "= unchanged"
    parts = [p for p, changed in (("output", row["text_changed"]), ("score", row["score_changed"])) if changed]
    return "≠ " + " and ".join(parts) + " changed"


def diff_frame(d: dict[str, Any]) -> pd.DataFrame:
    rows = [{"Prompt id": r["prompt_id"], "Model": r["model"], "Change": _change(r), "Old output": _cut(r["old_text"], 120),
             "New output": _cut(r["new_text"], 120), "Old score": r["old_score"], "New score": r["new_score"]} for r in d["rows"]]
    return pd.DataFrame(rows, columns=DIFF_COLUMNS)


@dataclass
class ExperimentView:
    """Named handles on the part's components."""

    file: gr.File
    status: gr.Markdown
    shown: gr.Dataframe
    replay_button: gr.Button
    diff: gr.Dataframe
    downloads: gr.File
    doc: gr.State


class ExperimentHandlers:
    def __init__(self, batches: Batches, view: ExperimentView, run_state: gr.State):
        self.batches = batches
        self.view = view
        self.run_state = run_state

    async def open(self, path: str | None) -> Update:
        """Check the file and show it; a bad or tampered file is refused with the reason and changes nothing."""
        v = self.view
        try:
            doc = await asyncio.to_thread(open_file, path, self.batches.s.config.max_upload_bytes)
        except ExperimentError as e:
            return {v.status: f"⚠️ {html.escape(e.message)}", v.shown: gr.skip(), v.replay_button: gr.skip(),
                    v.diff: gr.skip(), v.downloads: gr.skip(), v.doc: gr.skip()}
        return {v.status: "✅ " + html.escape(describe(doc)) + " Shown read-only: nothing is saved and nothing runs "
                "until you press Replay.", v.shown: gr.update(value=shown_frame(doc), visible=True),
                v.replay_button: gr.update(visible=True, interactive=True), v.diff: gr.update(visible=False),
                v.downloads: gr.update(value=None, visible=False), v.doc: doc}

    async def replay(self, doc: dict[str, Any] | None, previous: BatchRun | None, owner_state: str | None,
                     request: gr.Request, profile: gr.OAuthProfile | None = None) -> AsyncGenerator[Update, None]:
        """Run the file's prompts and models again (charged to the batch budget), then show the diff."""
        v = self.view
        owner = owner_for(request, profile, owner_state)
        previous = previous if isinstance(previous, BatchRun) and previous.owner == owner else None
        idle = {v.shown: gr.skip(), v.diff: gr.skip(), v.downloads: gr.skip(), v.doc: gr.skip(), self.run_state: previous}
        if not isinstance(doc, dict):
            yield {**idle, v.status: "Open an experiment file first.", v.replay_button: gr.skip()}
            return
        try:
            replay = await start_replay(self.batches, owner=owner, request=request, doc=doc, previous=previous)
        except BatchInputError as e:
            yield {**idle, v.status: f"⚠️ {html.escape(e.message)}", v.replay_button: gr.update(interactive=True)}
            return
        run, task = replay.run, replay.task
        tail = ResultsTail(run.out_path)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=POLL_SECONDS)
                done = len(tail.poll())
                yield {**idle, self.run_state: run, v.replay_button: gr.update(interactive=False),
                       v.status: f"⏳ **Replaying**: {done}/{run.total} done · {time.monotonic() - run.started:.1f} s"}
            try:
                summary = task.result()
            except (ChatError, asyncio.CancelledError) as e:
                message = e.message if isinstance(e, ChatError) else "The replay was stopped."
                yield {**idle, self.run_state: run, v.status: f"⚠️ {html.escape(message)}",
                       v.replay_button: gr.update(interactive=True)}
                return
            new, d = finish_replay(self.batches, replay, summary)
            files = await asyncio.to_thread(self._write, run, new, d)
            status = (f"✅ **Replayed**: {d['pairs']} pair(s), {d['unchanged']} unchanged, {d['changed']} changed. "
                      "The new experiment file and the diff are below.")
            yield {v.status: status, v.shown: gr.skip(), v.doc: gr.skip(), self.run_state: run,
                   v.diff: gr.update(value=diff_frame(d), visible=True), v.replay_button: gr.update(interactive=True),
                   v.downloads: gr.update(value=files, visible=True)}
        finally:
            await self.batches.end(run.id)

    async def api_experiment(self, experiment: str, replay: bool = False,
                             request: gr.Request = None,  # type: ignore[assignment]  # Gradio fills it in
                             profile: gr.OAuthProfile | None = None) -> dict[str, Any]:
        """Open an experiment file read-only, or replay it.

        `experiment` is the file's JSON text; it is checked (manifest, hashes) and a bad or tampered file is
        refused. Returns `description` and `rows` (prompt_id, model, prompt, text, score, error, model_version,
        request_id, sdk_version). With `replay`, the same prompts and models run again, charged to the batch
        budget like any batch, and the answer adds `diff` (pairs, unchanged, changed, and per prompt and model
        the old and new output and score) and `experiment` (the new file's JSON text).
        """
        owner = owner_for(request, profile, None)
        try:
            doc = open_text(experiment, self.batches.s.config.max_upload_bytes)
        except ExperimentError as e:
            raise gr.Error(e.message) from e
        answer: dict[str, Any] = {"description": describe(doc), "rows": results_rows(doc)}
        if not replay:
            return answer
        try:
            started = await start_replay(self.batches, owner=owner, request=request, doc=doc)
        except BatchInputError as e:
            raise gr.Error(e.message) from e
        try:
            try:
                summary = await started.task
            except ChatError as e:
                raise gr.Error(e.message) from e
            new, d = finish_replay(self.batches, started, summary)
        finally:
            await self.batches.end(started.run.id)
            self.batches.discard(started.run)  # an API caller gets everything in the answer: no files kept
        return {**answer, "diff": d, "experiment": dumps(new).decode("utf-8")}

    def _write(self, run: BatchRun, new: dict[str, Any], d: dict[str, Any]) -> list[str]:
        experiment, diff_path = run.experiment_path, run.directory / DIFF_NAME
        experiment.write_bytes(dumps(new))
        diff_path.write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        exports = exports_for(self.batches.s)  # short-lived copies, their owner's only (ui/exports.py)
        return [str(exports.copy(run.owner, Path(p))) for p in (experiment, diff_path)]


def build_experiment_part(batches: Batches, owner: gr.State, run_state: gr.State) -> ExperimentHandlers:
    """The collapsed "Open an experiment file" block of the Batch tab, wired."""
    with gr.Accordion("Open an experiment file", open=False, elem_id="batch-experiment"):
        gr.Markdown("<span class='parley-muted'>A run's experiment file (among its downloads) holds its prompts, settings, "
                    "outputs, scores and each reply's reproducibility card, with a sha256 of each part. Opening one "
                    "shows it read-only; **Replay** runs the same prompts and models again (it counts against your batch "
                    "budget like any run) and shows what changed.</span>")
        file = gr.File(label="Experiment file (.json)", file_types=[".json"], type="filepath",
                       elem_id="batch-experiment-file", height=110)
        status = gr.Markdown("", elem_id="batch-experiment-status")
        # Widths of their own: wrapped, Gradio squeezed the short columns to a letter a line ("Sc/or/e").
        shown = gr.Dataframe(headers=SHOWN_COLUMNS, interactive=False, wrap=True, max_height=420, visible=False,
                             column_widths=["100px", "170px", "70px", "220px", "380px", "140px", "120px", "120px"],
                             label="Prompts × models", elem_id="batch-experiment-table")
        replay_button = gr.Button("↻ Replay", visible=False, elem_id="batch-experiment-replay")
        diff_table = gr.Dataframe(headers=DIFF_COLUMNS, interactive=False, wrap=True, max_height=420, visible=False,
                                  column_widths=["100px", "170px", "120px", "90px", "90px", "340px", "340px"],
                                  label="Replay: old vs new", elem_id="batch-experiment-diff")
        downloads = gr.File(label="Replay files", file_count="multiple", interactive=False, visible=False,
                            elem_id="batch-experiment-downloads")
    doc = gr.State(None)
    view = ExperimentView(file=file, status=status, shown=shown, replay_button=replay_button, diff=diff_table,
                          downloads=downloads, doc=doc)
    handlers = ExperimentHandlers(batches, view, run_state)
    outputs = [status, shown, replay_button, diff_table, downloads, doc]
    file.upload(handlers.open, [file], outputs, api_visibility="private", show_progress="hidden")
    replay_button.click(handlers.replay, [doc, run_state, owner], [*outputs, run_state], api_visibility="private",
                        concurrency_limit=4, concurrency_id="batch", show_progress="hidden")
    api(handlers.api_experiment, api_name="experiment", concurrency_limit=4, concurrency_id="batch")
    return handlers
