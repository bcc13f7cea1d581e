"""The Batch tab's experiment file use case: write a run's file, open one read-only, replay it, diff the two. No Gradio.

The format is compare/experiment.py's. Opening a file reads and checks it only: nothing is written to
the database and no run starts; a bad or tampered file is refused with the reason. Replay builds a
BatchJob from the file (the same prompts, models, system prompt and parameters) that core/batch.py's
`Batches` charges to the batch budget and runs like any batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from chat.errors import ChatError
from chat.types import Params
from compare.batch import BatchSummary
from compare.experiment import ExperimentError, build, diff, dumps, loads, models_of, prompts_of, summary_doc
from core.compare_export import comparison_records
from storage.models import ComparisonDetail

if TYPE_CHECKING:
    from core.batch import Batches, BatchJob, BatchRun

#: The name of a run's experiment file among its downloads.
FILE_NAME = "batch-experiment.json"
DIFF_NAME = "replay-diff.json"
#: Where "Judge this run" writes its verdicts in the run's directory (core/judges.py).
JUDGES_NAME = "batch-judges.jsonl"


def of_run(job: BatchJob, summary: BatchSummary, *, replay_of: str | None = None,
           comparisons: Sequence[Mapping[str, Any]] = (), judges: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The experiment document of a finished (or stopped) batch run.

    `comparisons`: compare export records (core/compare_export.py) to include; `judges`: judge verdicts
    on the run, None while the app has none for batches (the hook for core/judges.py).
    """
    return build(prompts=job.prompts, models=job.models, params=job.params.model_dump(exclude_none=True),
                 system=job.system, rows=summary.rows, summary=summary_doc(summary), concurrency=job.concurrency,
                 comparisons=comparisons, judges=judges, replay_of=replay_of)


def comparisons_experiment(details: Sequence[ComparisonDetail]) -> str:
    """The owner's comparisons as an experiment file's text: its `comparisons` section holds the compare export
    records (prompts, panes with their position and card, votes); no batch prompts or results."""
    doc = build(prompts=[], models=[], params={}, system=None, rows=[], comparisons=comparison_records(details))
    return dumps(doc).decode("utf-8")


def judges_in(directory: Path) -> list[dict[str, Any]] | None:
    """The judge verdicts written beside a Batch-tab run (core/judges.py's `batch-judges.jsonl`), None when it has none.

    The tab writes the experiment file when the run ends; judging comes after, so calling Batches.write_csv
    again once the judges are done puts their verdicts in the file (the hook for "Judge this run").
    """
    path = directory / JUDGES_NAME
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def file_sha256(doc: Mapping[str, Any]) -> str:
    """sha256 of a document's file bytes (a replay names the file it replays by it)."""
    return hashlib.sha256(dumps(doc)).hexdigest()


def open_file(path: str | None, limit: int) -> dict[str, Any]:
    """Read and check an uploaded experiment file (blocking: run in a thread); ExperimentError says what is wrong."""
    if not path:
        raise ExperimentError("Choose an experiment file (.json) first.")
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > limit:
            raise ExperimentError(f"{p.name} is {size / 1e6:.1f} MB; files are limited to {limit / 1e6:.1f} MB.")
        data = p.read_bytes()
    except OSError as e:
        raise ExperimentError(f"The upload could not be read ({e.strerror or e}); upload it again.") from e
    return loads(data)


def replay_job(batches: Batches, doc: Mapping[str, Any], label: str = "experiment file") -> BatchJob:
    """The batch a replay runs: the file's prompts × models with its system prompt and parameters (BatchInputError)."""
    from core.batch import MAX_CALLS, MAX_CONCURRENCY, MAX_MODELS, BatchInputError, BatchJob

    try:
        prompts = prompts_of(doc)
    except ExperimentError as e:
        raise BatchInputError(e.message) from e
    if any(p.files for p in prompts):
        raise BatchInputError("This experiment's prompts name files, which the file does not hold: replay it on the "
                              "command line beside them (python -m compare.experiment replay FILE --files-dir DIR).")
    refs: list[str] = []
    for ref in models_of(doc):
        try:
            _provider, info = batches.s.registry.resolve(ref)
        except ChatError as e:
            raise BatchInputError(e.message) from e
        if info.ref not in refs:
            refs.append(info.ref)
    if not refs or not prompts:
        raise BatchInputError("The experiment file has no prompts or no models to replay.")
    if len(refs) > MAX_MODELS or len(prompts) * len(refs) > MAX_CALLS:
        raise BatchInputError(f"Replaying this file needs {len(prompts) * len(refs):,} calls over {len(refs)} models; "
                              f"a run is limited to {MAX_CALLS:,} calls and {MAX_MODELS} models.")
    settings = doc["settings"]
    try:
        params = Params(**(settings.get("params") or {}))
    except (ValidationError, TypeError) as e:
        raise BatchInputError("The experiment file's parameters are not valid here; nothing was run.") from e
    concurrency = settings.get("concurrency")
    concurrency = min(max(concurrency, 1), MAX_CONCURRENCY) if isinstance(concurrency, int) else 4
    system = settings.get("system")
    return BatchJob(prompts, refs, concurrency, params, system if isinstance(system, str) and system else None, label)


def open_text(text: str | bytes | None, limit: int) -> dict[str, Any]:
    """An experiment file sent as its JSON text (the API), checked as an upload is; ExperimentError says what is wrong."""
    if not text:
        raise ExperimentError("Send the experiment file's JSON text.")
    if len(text) > limit:
        raise ExperimentError(f"The file is {len(text) / 1e6:.1f} MB; files are limited to {limit / 1e6:.1f} MB.")
    return loads(text)


@dataclass
class Replay:
    """A replay under way: the batch it runs, its run and the task running it, and the file it replays."""

    doc: Mapping[str, Any]
    job: BatchJob
    run: BatchRun
    task: asyncio.Task[BatchSummary]


async def start_replay(batches: Batches, *, owner: str, request: Any, doc: Mapping[str, Any],
                       previous: BatchRun | None = None) -> Replay:
    """Check the file's batch, charge it to the batch budget and start it, as any batch (BatchInputError)."""
    job = replay_job(batches, doc)
    batches.check_idle(owner)
    await batches.charge(request, owner, job)
    run, task = batches.start(owner, job, previous)
    return Replay(doc, job, run, task)


def finish_replay(batches: Batches, replay: Replay, summary: BatchSummary) -> tuple[dict[str, Any], dict[str, Any]]:
    """The finished replay's new experiment file and its per-prompt diff against the replayed one."""
    batches.finished(replay.run, summary)
    new = of_run(replay.job, summary, replay_of=file_sha256(replay.doc))
    return new, diff(replay.doc, new)


def results_rows(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What the tab shows of a file: one row per prompt and model (its output, score, version and card)."""
    prompts = {str(p["id"]): p for p in doc["prompts"]}
    return [{"prompt_id": str(r.get("prompt_id")), "model": r.get("model"),
             "prompt": (prompts.get(str(r.get("prompt_id"))) or {}).get("prompt"), "text": r.get("text"),
             "score": r.get("score"), "error": r.get("error"), "model_version": r.get("model_version"),
             "request_id": r.get("request_id"), "sdk_version": r.get("sdk_version")}
            for r in doc.get("results") or ()]


def describe(doc: Mapping[str, Any]) -> str:
    """One line about a file: its size, app version and time."""
    m = doc["manifest"]
    compared = f", {len(doc['comparisons'])} comparison(s)" if doc.get("comparisons") else ""
    return (f"{len(doc['prompts'])} prompt(s) × {len(models_of(doc))} model(s), {len(doc['results'])} result(s){compared}; "
            f"made by Parley {m.get('app_version')} at {m.get('created_at')}. Every hash checks out.")


__all__ = [
    "DIFF_NAME",
    "ExperimentError",
    "FILE_NAME",
    "JUDGES_NAME",
    "Replay",
    "comparisons_experiment",
    "describe",
    "diff",
    "dumps",
    "file_sha256",
    "finish_replay",
    "judges_in",
    "of_run",
    "open_file",
    "open_text",
    "replay_job",
    "results_rows",
    "start_replay",
    "summary_doc",
]
