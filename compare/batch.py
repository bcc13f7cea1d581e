"""Batch runs: every prompt × model through the chat turn runner, each result appended to JSONL as it ends.

    python -m compare.batch prompts.jsonl --models demo:parley-demo,openai:gpt-4o-mini --out results.jsonl

A JSONL prompt may carry files, `{"prompt": "What does this chart show?", "files": ["chart.png"]}`, relative
to the prompts file's folder (compare/batch_files.py checks them all before the run starts). A pair whose
model cannot read a prompt's file (an image for a model without vision) is an error row naming the
models that can, and calls nothing; the other pairs run.

Each (prompt, model) pair is one reply of compare/engine.py, the engine a compare pane runs too: a
`chat.turn.Turn` (or a tool loop with --tools), so retries, timeouts and metrics are exactly a chat turn's.
Runs are resumable: pairs already in the output without an error are skipped, everything else
(missing, or an error row) runs again and is appended; the last row of a pair is the one that counts.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from chat import tracing
from chat.errors import ChatError, InvalidInput, ModelNotFound
from chat.providers.base import Provider
from chat.tools import Toolbox
from chat.turn import TurnPolicy, TurnResult
from chat.types import Attachment, FinishReason, ModelInfo, Params
from compare.batch_summary import BatchSummary, ModelSummary, latest_rows, summarize
from compare.engine import ReplyResult, UnsupportedFile, attempts_of, file_refusal, prompt_messages, speed_of, start_reply
from compare.pricing import PriceTable
from compare.repro import CARD_FIELDS, CardFields, card_extras
from compare.scoring import Check, CheckError, Scorer, parse_checks

if TYPE_CHECKING:

    from chat.registry import Registry

# The summaries live in compare/batch_summary.py; callers keep importing them from here.
__all__ = ["RESULT_FIELDS", "BatchError", "BatchSummary", "ModelSummary", "Prompt", "PromptFileError", "latest_rows",
           "load_prompts", "main", "parse_prompts", "read_results", "result_row", "rows_to_csv", "run_batch", "summarize"]

log = logging.getLogger("parley.batch")

#: Columns of a result row, in order (JSONL keys and CSV columns).
RESULT_FIELDS: tuple[str, ...] = (
    "prompt_id",       # the prompt's id (from the file, else its line number)
    "model",           # provider:model as resolved by the registry
    "prompt",          # the user prompt sent
    "text",            # the reply (partial when the turn failed mid-stream)
    "finish_reason",   # stop, length, content_filter, refusal, error, truncated, ...
    "error",           # None when the turn succeeded, else the message a user can act on
    "error_kind",      # the error's short kind (rate_limited, auth, stream, ...), else None
    "ttft_ms",         # time to first token, from the start of the turn (retries included)
    "duration_ms",     # whole turn
    "tokens_per_second",  # output tokens over generation time (chat.types.tokens_per_second)
    "input_tokens",    # the whole prompt, cached parts included (None when not reported)
    "output_tokens",   # reasoning included; Parley's estimate when the provider did not report it
    "reasoning_tokens",  # part of output_tokens (None when not reported)
    "cached_input_tokens",  # part of input_tokens read from the provider's prompt cache
    "cache_write_tokens",   # part of input_tokens written to the cache (Anthropic)
    "usage_estimated",  # true when the token counts are Parley's estimate, not the provider's
    "cost",            # USD at the price table's rates; None when the model or usage is unknown
    "attempts",        # tries the turn made (1 = no retry)
    "started_at",      # UTC ISO 8601, when the pair got its concurrency slot
    "tool_calls",      # with --tools: the calls made, [{name, arguments, result, error}], else []
    "files",           # the names of the prompt's files ("files" in the prompts file), else []
    "score",           # share of the prompt's checks passed (compare/scoring.py); None: no checks, or an error row
    "checks",          # [{type, passed}] per check (the reference first), else []
    # The reproducibility card (compare/repro.py): nothing secret.
    "model_version",   # the model version the provider reports it answered with (None when it reports none)
    "params",          # the parameters actually sent (those the model takes), e.g. {"max_tokens": 2048}
    "system_prompt_sha256",  # first 16 hex digits of the sha256 of the system prompt sent; None without one
    "request_id",      # the provider's id for the request that answered, when it gives one
    "sdk_version",     # the SDK that made the call and its version ("openai 3.57.0"), "demo" for the demo
)

_SNIFF_JSONL = (".jsonl", ".ndjson", ".json")


class BatchError(InvalidInput, ValueError):
    """A batch that cannot start (bad prompts, models or settings); the message says what to fix."""


class PromptFileError(BatchError):
    """A prompts file that cannot be read; the message names the line."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """One prompt of a batch; `system` overrides the batch's system prompt; `files` as the prompts file names them.

    `checks` score its replies (its `reference` first, then its `checks`: compare/scoring.py).
    """

    id: str
    prompt: str
    system: str | None = None
    files: tuple[str, ...] = ()
    checks: tuple[Check, ...] = ()


# -- prompt files ---------------------------------------------------------------------------------


def load_prompts(source: str | os.PathLike[str] | bytes, *, name: str | None = None) -> list[Prompt]:
    """Prompts from a path or the bytes of an upload: JSONL rows {"id"?, "prompt", "system"?}, or plain text.

    `.txt` files hold one prompt per non-blank line; `.jsonl`/`.ndjson`/`.json` are JSONL; any other
    name (or bytes without `name`) is JSONL when its first non-blank line starts with "{". A missing
    id becomes the line number. Raises PromptFileError naming the line.
    """
    if isinstance(source, (bytes, bytearray)):
        label = name or "the uploaded file"
        data = bytes(source)
    else:
        path = Path(source)
        label = name or str(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise PromptFileError(f"Could not read the prompts file {path}: {e.strerror or e}.") from e
        name = name or path.name
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PromptFileError(f"{label} is not UTF-8 text (byte {e.start} cannot be decoded).") from e
    suffix = Path(name).suffix.lower() if name else ""
    if suffix == ".txt":
        return parse_prompts(text, fmt="txt", label=label)
    if suffix in _SNIFF_JSONL:
        return parse_prompts(text, fmt="jsonl", label=label)
    return parse_prompts(text, fmt=None, label=label)


def parse_prompts(text: str, *, fmt: str | None = None, label: str = "the prompts") -> list[Prompt]:
    """Prompts from text; `fmt` is "jsonl", "txt" or None (guess from the first non-blank line)."""
    lines = text.splitlines()
    if fmt is None:
        first = next((ln.strip() for ln in lines if ln.strip()), "")
        fmt = "jsonl" if first.startswith("{") else "txt"
    if fmt not in ("jsonl", "txt"):
        raise ValueError(f"unknown prompts format {fmt!r}")
    prompts: list[Prompt] = []
    first_line: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        p = _jsonl_prompt(line, n, label) if fmt == "jsonl" else Prompt(str(n), line.strip())
        if p.id in first_line:
            raise PromptFileError(f"{label}, line {n}: the id '{p.id}' is already used on line {first_line[p.id]}; "
                                  "ids must be unique (results are matched to prompts by id).")
        first_line[p.id] = n
        prompts.append(p)
    if not prompts:
        raise PromptFileError(f"{label} has no prompts: write one JSON object per line "
                              '({"id": "q1", "prompt": "..."}) or one prompt per line in a .txt file.')
    return prompts


def _jsonl_prompt(line: str, n: int, label: str) -> Prompt:
    where = f"{label}, line {n}"
    stripped = line.strip()
    if stripped.startswith("["):
        raise PromptFileError(f"{where}: this looks like a JSON array; write one JSON object per line (JSONL) instead.")
    try:
        row = json.loads(stripped)
    except json.JSONDecodeError as e:
        raise PromptFileError(f"{where}: not valid JSON ({e.msg} at column {e.colno}).") from e
    if not isinstance(row, dict):
        raise PromptFileError(f'{where}: expected a JSON object like {{"id": "q1", "prompt": "..."}}, got {type(row).__name__}.')
    if "prompt" not in row:
        keys = ", ".join(sorted(row)) or "none"
        raise PromptFileError(f'{where}: no "prompt" key (keys found: {keys}).')
    prompt = row["prompt"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptFileError(f'{where}: "prompt" must be non-empty text.')
    pid = row.get("id", n)
    if pid is None:
        pid = n
    if isinstance(pid, bool) or not isinstance(pid, (str, int)) or (isinstance(pid, str) and not pid.strip()):
        raise PromptFileError(f'{where}: "id" must be a non-empty string or an integer, got {pid!r}.')
    system = row.get("system")
    if system is not None and not isinstance(system, str):
        raise PromptFileError(f'{where}: "system" must be text or null.')
    files = row.get("files")
    files = [] if files is None else files
    if not isinstance(files, list) or not all(isinstance(f, str) and f.strip() for f in files):
        raise PromptFileError(f'{where}: "files" must be a list of file names, relative to the prompts file '
                              '(e.g. ["chart.png"]).')
    try:
        checks = parse_checks(row.get("reference"), row.get("checks"))
    except CheckError as e:
        # Refused with the file, before any provider call: a typo in a check would otherwise score every reply 0.
        raise PromptFileError(f"{where} (prompt '{str(pid).strip()}'): {e}") from e
    return Prompt(str(pid).strip(), prompt, system if system and system.strip() else None, tuple(f.strip() for f in files),
                  checks)


# -- result rows ----------------------------------------------------------------------------------


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def result_row(prompt: Prompt, result: ReplyResult, *, started_at: str, prices: PriceTable,
               params: Mapping[str, Any] | None = None, card: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSONL row for one finished turn, or tool loop (keys: RESULT_FIELDS).

    `params`: the parameters sent; `card`: compare/repro.py's card_extras (both None for a pair not run).
    """
    ref = result.ref
    usage = result.usage
    cost = prices.usage_cost(ref, usage)
    return {
        "prompt_id": prompt.id,
        "model": ref,
        "prompt": prompt.prompt,
        "text": result.text,
        "finish_reason": result.finish_reason.value if result.finish_reason else None,
        "error": error_text(result.error) if result.error else None,
        "error_kind": result.error.kind if result.error else None,
        "ttft_ms": _round(result.ttft_ms, 1),
        "duration_ms": _round(result.duration_ms, 1),
        "tokens_per_second": _round(speed_of(result), 2),
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "usage_estimated": usage.estimated,
        "cost": _round(cost, 10),
        "attempts": attempts_of(result),
        "started_at": started_at,
        "tool_calls": [{"name": t.name, "arguments": t.arguments, "result": t.result, "error": t.error}
                       for t in getattr(result, "tools", ())],
        "files": [PurePosixPath(f.replace("\\", "/")).name for f in prompt.files],
        "score": None,
        "checks": [],
        "model_version": result.model_version,
        "params": dict(params) if params is not None else None,
        **{name: (card or {}).get(name) for name in CARD_FIELDS},
    }


#: A chat's advice for a model the provider does not know, and what a batch (tab or command line) says instead.
_CHAT_ADVICE = "Pick another model in the sidebar"
_BATCH_ADVICE = "Check its name, or leave it out of the batch's models"


def error_text(error: ChatError) -> str:
    """A row's error as a batch user can act on it: a batch has no sidebar to pick a model in."""
    text = str(error)
    return text.replace(_CHAT_ADVICE, _BATCH_ADVICE) if isinstance(error, ModelNotFound) else text


def refused_result(info: ModelInfo, why: str) -> TurnResult:
    """The result of a pair that is not run: its model cannot read the prompt's files (no call, no cost)."""
    r = TurnResult(provider=info.provider, model=info.id)
    r.error = UnsupportedFile(why, provider=info.provider)
    r.finish_reason = FinishReason.ERROR
    r.finish_detail = r.error.kind
    return r


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a results file; a missing file is empty, unreadable lines (a crash mid-write) are skipped and logged."""
    return _read_results(Path(path))[0]


def _read_results(path: Path) -> tuple[list[dict[str, Any]], int]:
    if not path.exists():
        return [], 0
    rows: list[dict[str, Any]] = []
    bad = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if not isinstance(row, dict) or "prompt_id" not in row or "model" not in row:
                bad += 1
                log.warning("%s, line %d: not a result row; ignored (it will be run again if needed).", path, n)
                continue
            row["prompt_id"] = str(row["prompt_id"])
            rows.append(row)
    return rows, bad


def rows_to_csv(rows: Iterable[Mapping[str, Any]], *, columns: Sequence[str] = RESULT_FIELDS,
                escape_formulas: bool = True) -> str:
    """CSV text of result rows with a header (columns: RESULT_FIELDS in order; None is an empty cell).

    With `escape_formulas` (default), a text cell starting with =, +, -, @, tab or CR gets a leading
    apostrophe so spreadsheet programs show it instead of running it as a formula (replies are untrusted).
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            if v is None:
                v = ""
            elif isinstance(v, (list, dict)):
                v = json.dumps(v, ensure_ascii=False) if v else ""
            elif isinstance(v, str) and escape_formulas and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
                v = "'" + v
            cells.append(v)
        writer.writerow(cells)
    return buf.getvalue()


# -- summaries ------------------------------------------------------------------------------------


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _resolve(registry: Registry, models: Sequence[str]) -> dict[str, tuple[Provider, ModelInfo]]:
    resolved: dict[str, tuple[Provider, ModelInfo]] = {}
    for ref in models:
        provider, info = registry.resolve(ref)  # NotConfigured: a clear message, before anything runs
        resolved.setdefault(info.ref, (provider, info))
    if not resolved:
        raise BatchError("No models were given: list them as provider:model (e.g. demo:parley-demo).")
    return resolved


def _warm(providers: list[Provider]) -> None:
    """Import the SDKs of the providers a run uses and build their clients (blocking: run in a thread)."""
    for provider in providers:
        try:
            provider.warm()
        except Exception as e:  # noqa: BLE001 - a broken SDK is reported by the pair's own call, with its message
            log.warning("warming %s failed: %s", provider.name, e)


async def run_batch(
    registry: Registry,
    prompts: Sequence[Prompt],
    models: Sequence[str],
    *,
    out_path: str | os.PathLike[str],
    concurrency: int = 4,
    params: Params | None = None,
    policy: TurnPolicy | None = None,
    progress: Callable[[int, int], None] | None = None,
    system: str | None = None,
    prices: PriceTable | None = None,
    tools: Toolbox | None = None,
    files: Mapping[str, Sequence[Attachment]] | None = None,
) -> BatchSummary:
    """Run every prompt × model, appending each finished row to `out_path` (JSONL) at once.

    Pairs already in `out_path` without an error are skipped. `progress(done, total)` is called with
    (0, total) first and after every finished turn, where total counts the pairs this run will do.
    `system` applies to prompts without their own. Costs use `prices` (default: the built-in table).
    Cancelling the task stops the run; finished rows stay written, unfinished pairs run next time.
    Raises a ChatError subclass (NotConfigured, BatchError) before running anything when the input is unusable.
    With `tools` (a chat.tools.Toolbox), models that support tools may call them, as in a chat.
    `files` holds each prompt's checked files by prompt id (compare/batch_files.py's load_prompt_files);
    a pair whose model cannot read them is an error row that calls nothing.
    """
    if concurrency < 1:
        raise BatchError(f"Concurrency must be at least 1, got {concurrency}.")
    prompts = list(prompts)
    if not prompts:
        raise BatchError("There are no prompts to run.")
    seen: set[str] = set()
    for p in prompts:
        if p.id in seen:
            raise BatchError(f"The prompt id '{p.id}' is used twice; ids must be unique.")
        seen.add(p.id)
    files = files or {}
    unloaded = [p.id for p in prompts if p.files and p.id not in files]
    if unloaded:
        raise BatchError(f"The files of prompt '{unloaded[0]}' were not loaded (compare.batch_files.load_prompt_files).")
    resolved = _resolve(registry, models)
    params = params or Params()
    prices = prices if prices is not None else PriceTable()
    out = Path(out_path)

    existing, ignored = _read_results(out)
    finished = {(r["prompt_id"], r["model"]) for r in existing if r.get("error") is None}
    jobs = [(p, ref) for p in prompts for ref in resolved if (p.id, ref) not in finished]
    tried = {(r["prompt_id"], r["model"]) for r in existing}
    pairs = len(prompts) * len(resolved)
    total = len(jobs)
    new_rows: list[dict[str, Any]] = []
    scorer = Scorer()
    semaphore = asyncio.Semaphore(concurrency)
    if jobs:
        # The first-token timeout is the whole wait for a reply's first token: importing an SDK and
        # building its client (seconds on a busy machine) must not eat into it, so do it first, off the loop.
        await asyncio.to_thread(_warm, list({id(resolved[ref][0]): resolved[ref][0] for _, ref in jobs}.values()))
    started = time.perf_counter()
    if progress:
        progress(0, total)

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8", newline="\n") as f:
        if out.stat().st_size and not _ends_with_newline(out):
            f.write("\n")  # a crash left half a line: start ours on a fresh one
        run_span = tracing.group("batch", {"parley.pairs": total, "parley.models": len(resolved)})

        async def one(prompt: Prompt, ref: str) -> None:
            provider, info = resolved[ref]
            attachments = files.get(prompt.id, ())
            refusal = file_refusal(info, attachments, registry) if attachments else None
            result: ReplyResult
            sent: dict[str, Any] | None = None
            card: CardFields | None = None
            if refusal is not None:
                started_at = _utc_now()
                result = refused_result(info, refusal)
            else:
                messages = prompt_messages(prompt.prompt, system=prompt.system or system, attachments=attachments)
                async with semaphore:
                    started_at = _utc_now()
                    reply = start_reply(provider, info, messages, params, policy=policy, toolbox=tools)
                    span = tracing.start(reply, parent=run_span, role="batch")  # None when tracing is off
                    try:
                        result = await reply.run()
                    finally:
                        tracing.end(span)
                sent = params.for_provider((info.params or provider.accepts) & provider.accepts)
                card = card_extras(provider, result, prompt.system or system)
            row = result_row(prompt, result, started_at=started_at, prices=prices, params=sent, card=card)
            if prompt.checks and row["error"] is None:  # an error row is not scored (it runs again on resume)
                row["score"], row["checks"] = await scorer.score(prompt.checks, row["text"] or "")
            # Written from the event loop thread only, one whole line at a time: rows never interleave.
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            new_rows.append(row)
            if progress:
                progress(len(new_rows), total)

        # gather, not a TaskGroup: an unexpected failure (say, a full disk) surfaces as itself, not wrapped.
        tasks = [asyncio.create_task(one(prompt, ref)) for prompt, ref in jobs]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            tracing.end(run_span)

    wanted = {(p.id, ref) for p in prompts for ref in resolved}
    rows = [r for r in latest_rows([*existing, *new_rows]) if (r["prompt_id"], r["model"]) in wanted]
    summary = summarize(rows, models=list(resolved))
    return replace(
        summary,
        pairs=pairs,
        skipped=pairs - total,
        ran=len(new_rows),
        retried=sum(1 for p, ref in jobs if (p.id, ref) in tried),
        run_errors=sum(1 for r in new_rows if r["error"] is not None),
        ignored_lines=ignored,
        elapsed_s=time.perf_counter() - started,
        out_path=str(out),
    )


# -- command line (compare/batch_cli.py) ----------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m compare.batch`: the command line lives in compare/batch_cli.py."""
    from compare.batch_cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
