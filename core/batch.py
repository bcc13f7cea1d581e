"""The Batch tab's use case: validate a prompts file and models, charge the batch budget, start and stop a run, its files.

A run is compare/batch.py's `run_batch` (the engine behind `python -m compare.batch` too) in a task of
its own, writing into a fresh directory (random name, mode 0700) that is removed when its session
starts its next run or ends. Batch results are not stored in the database (and so are not in the
dashboard): the JSONL file of a run is its record. One owner runs one batch at a time. No Gradio.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from chat.errors import ChatError
from chat.types import Attachment, Params, param_bounds
from compare.batch import BatchError, BatchSummary, Prompt, load_prompts, rows_to_csv, run_batch
from compare.batch_files import load_prompt_files
from compare.engine import file_refusal
from compare.pricing import PriceTable
from core.attachments import limits_of
from core.moderation import Moderator
from core.ratelimit import Verdict
from core.services import Services

log = logging.getLogger("parley.batch_ui")

MAX_MODELS = 6
MAX_CONCURRENCY = 8
#: prompts × models per run, whatever the batch budget (BATCH_RATE_LIMIT) allows.
MAX_CALLS = 2_000
PROMPT_SUFFIXES = (".jsonl", ".ndjson", ".json", ".txt")


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
    #: Each prompt's checked files, by prompt id (prompts without files are not in it).
    attachments: dict[str, list[Attachment]] = field(default_factory=dict)
    #: Pairs (prompt id, model) that call nothing: the model cannot read the prompt's files (an error row each).
    refused: frozenset[tuple[str, str]] = frozenset()

    @property
    def calls(self) -> int:
        """Provider calls the run makes (and is charged): every pair but the refused ones."""
        return len(self.prompts) * len(self.models) - len(self.refused)


def budget_message(job: BatchJob, verdict: Verdict) -> str:
    """Why a run was refused: the calls it needs and what the batch budget has left."""
    need = f"This run needs {job.calls:,} calls ({len(job.prompts):,} prompt(s) × {len(job.models)} model(s)"
    need += f", less {len(job.refused):,} pair(s) whose model cannot read the prompt's files)" if job.refused else ")"
    if verdict.never:
        return f"{need}, more than the whole batch budget ({verdict.limit}). Nothing was run: use fewer prompts or models."
    return (f"{need} and {verdict.remaining:,} are left of your batch budget ({verdict.limit}). Nothing was run: "
            f"use fewer prompts or models, or wait about {verdict.wait_text}.")


@dataclass
class BatchRun:
    """One run of one owner: where its files are. Kept in the session's state."""

    id: str
    owner: str
    directory: Path
    models: list[str]
    total: int
    started: float = field(default_factory=time.monotonic)
    #: What it runs: the experiment file (core/experiment.py) is written from it and the run's rows.
    job: BatchJob | None = None

    @property
    def out_path(self) -> Path:
        return self.directory / "batch-results.jsonl"

    @property
    def csv_path(self) -> Path:
        return self.directory / "batch-results.csv"

    @property
    def summary_path(self) -> Path:
        return self.directory / "batch-summary.json"

    @property
    def experiment_path(self) -> Path:
        return self.directory / "batch-experiment.json"


class ResultsTail:
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


class Batches:
    """Validate, charge, start, stop and clean up batch runs; one running batch per owner."""

    def __init__(self, services: Services, prices: PriceTable | None = None, root: Path | None = None):
        """`root`: where run directories are made (default: the system temp dir)."""
        self.s = services
        self.prices = prices if prices is not None else PriceTable.from_env()
        self.root = root
        # run id -> (owner, the task running it), so Stop can end it even when the page has already
        # let go of it; also how one owner is kept to one run at a time.
        self.active: dict[str, tuple[str, asyncio.Task[BatchSummary]]] = {}

    # -- validation ----------------------------------------------------------------------------

    async def prepare(self, file: str | None, models: list[str] | str | None, concurrency: Any,
                      system: str | None, max_tokens: Any, files: Sequence[str | os.PathLike[str]] = ()) -> BatchJob:
        """`validate` in a worker thread: reading and decoding the prompts' files must not hold up the event loop."""
        return await asyncio.to_thread(self.validate, file, models, concurrency, system, max_tokens, files)

    def validate(self, file: str | None, models: list[str] | str | None, concurrency: Any,
                 system: str | None, max_tokens: Any, files: Sequence[str | os.PathLike[str]] = ()) -> BatchJob:
        """Check everything before a call is made; BatchInputError says what to fix (blocking: see `prepare`).

        `files` are the uploads a prompt's `"files": [...]` may name (matched by file name). Every
        named file is read and checked here, before anything is charged: a missing or refused file
        refuses the whole run.
        """
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
        attachments: dict[str, list[Attachment]] = {}
        refused: set[tuple[str, str]] = set()
        if any(p.files for p in prompts):
            uploads: dict[str, Path] = {}
            for f in files or ():
                upload = Path(f)
                if upload.name in uploads:
                    raise BatchInputError(f"Two uploaded files are named {upload.name}: file names must be unique.")
                uploads[upload.name] = upload
            try:
                attachments = load_prompt_files(prompts, uploads, limits_of(self.s.config))
            except BatchError as e:
                raise BatchInputError(e.message) from e
            for ref in refs:
                _provider, info = self.s.registry.resolve(ref)
                refused |= {(pid, ref) for pid, atts in attachments.items() if file_refusal(info, atts, self.s.registry)}
            if len(refused) == len(prompts) * len(refs):
                raise BatchInputError("None of the chosen models can read the prompts' files (an image needs a model "
                                      "with vision). Nothing was run.")
        return BatchJob(prompts, refs, conc, params, system, label, attachments, frozenset(refused))

    def check_idle(self, owner: str) -> None:
        """One batch per owner at a time (BatchInputError when one is running, perhaps in another tab)."""
        if any(o == owner for o, _ in self.active.values()):
            raise BatchInputError("A batch of yours is already running (perhaps in another tab): stop it or wait for it to finish.")

    async def charge(self, request: Any, owner: str, job: BatchJob) -> None:
        """Every call of the run is counted before it starts, against the batch budget (BATCH_RATE_LIMIT), or none is;
        then its prompts are moderated (MODERATION=openai): one flagged prompt refuses the run (BatchInputError)."""
        verdict = await self.s.limiter.charge(self.s.limiter.identity(request, owner), calls=job.calls, budget="batch")
        if not verdict.allowed:
            raise BatchInputError(budget_message(job, verdict))
        # MODERATION=openai checks every prompt as the chat checks a message; one flagged refuses the run whole.
        flagged = await Moderator.of(self.s).flagged_prompts([(p.id, p.prompt) for p in job.prompts])
        if flagged:
            named = "; ".join(f"{pid} ({', '.join(cats)})" for pid, cats in flagged[:5])
            more = f" and {len(flagged) - 5} more" if len(flagged) > 5 else ""
            raise BatchInputError(f"{len(flagged)} prompt(s) were flagged by the moderation check: {named}{more}. "
                                  "Nothing was run: change or remove them and start again.")

    # -- running -------------------------------------------------------------------------------

    def _new_run(self, owner: str, job: BatchJob) -> BatchRun:
        if self.root is not None:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdtemp: a random name created 0700, so no other user or session can guess or share it.
        directory = Path(tempfile.mkdtemp(prefix="parley-batch-", dir=self.root))
        return BatchRun(id=secrets.token_urlsafe(12), owner=owner, directory=directory,
                        models=job.models, total=job.calls, job=job)

    def start(self, owner: str, job: BatchJob, previous: BatchRun | None = None) -> tuple[BatchRun, asyncio.Task[BatchSummary]]:
        """Start the run in a task of its own (the previous run's files go); `end` it when done with it."""
        self.discard(previous)
        run = self._new_run(owner, job)
        task = asyncio.ensure_future(run_batch(
            self.s.registry, job.prompts, job.models, out_path=run.out_path, concurrency=job.concurrency,
            params=job.params, policy=self.s.policy, system=job.system, prices=self.prices, files=job.attachments,
        ))
        self.active[run.id] = (owner, task)
        log.info(json.dumps({"event": "batch_start", "owner": owner, "run": run.id, "prompts": len(job.prompts),
                             "models": job.models, "concurrency": job.concurrency}))
        return run, task

    def finished(self, run: BatchRun, summary: BatchSummary) -> None:
        log.info(json.dumps({"event": "batch_end", "owner": run.owner, "run": run.id, "ran": summary.ran,
                             "errors": summary.run_errors, "elapsed_s": round(summary.elapsed_s or 0, 2)}))

    async def end(self, run_id: str) -> None:
        """Cancel the run if it still runs and forget it; finished rows stay in its file."""
        entry = self.active.pop(run_id, None)
        if entry is None:
            return
        task = entry[1]
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def stop(self, run: BatchRun, owner: str) -> None:
        """End `owner`'s run (another owner's run is left alone)."""
        entry = self.active.get(run.id)
        if entry is not None and entry[0] == owner:
            await self.end(run.id)

    def discard(self, run: Any) -> None:
        """Remove a finished run's directory (the downloads already handed out are copies)."""
        if not isinstance(run, BatchRun) or run.id in self.active:
            return
        shutil.rmtree(run.directory, ignore_errors=True)

    # -- files ---------------------------------------------------------------------------------

    def write_csv(self, run: BatchRun, summary: BatchSummary) -> list[Path]:
        """Write the CSV of the run's final rows, its summary (the CLI's --summary JSON) and its experiment file
        (compare/README.md); the files to offer."""
        run.csv_path.write_text(rows_to_csv(summary.rows), encoding="utf-8")
        run.summary_path.write_text(json.dumps(summary_json(summary), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if not run.out_path.exists():
            return []
        if run.job is None:
            return [run.out_path, run.csv_path, run.summary_path]
        from core.experiment import dumps, judges_in, of_run  # core/experiment.py builds jobs: imported here, not above

        try:
            run.experiment_path.write_bytes(dumps(of_run(run.job, summary, judges=judges_in(run.directory))))
        except (ValueError, TypeError) as e:  # a value JSON cannot hold (NaN): the other downloads still go out
            log.warning("could not write the experiment file of run %s: %s", run.id, e)
            return [run.out_path, run.csv_path, run.summary_path]
        return [run.out_path, run.csv_path, run.summary_path, run.experiment_path]


def summary_json(summary: BatchSummary) -> dict[str, Any]:
    """The summary download: `--summary`'s document without the server's file path."""
    doc = summary.to_json()
    doc.pop("out_path", None)  # a temporary directory on the server: nothing the user needs, nor should see
    return doc
