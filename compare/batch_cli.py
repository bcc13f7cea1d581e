"""`python -m compare.batch PROMPTS --models a,b --out FILE`: the batch runner's command line.

Kept apart from compare/batch.py (the runner, result rows and summaries) so that module stays a library.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chat.errors import ChatError
from chat.types import Attachment, Params
from compare.batch import BatchError, BatchSummary, load_prompts, rows_to_csv, run_batch
from compare.judge_run import JudgedRun, judge_rows
from compare.pricing import PriceError, PriceTable

if TYPE_CHECKING:
    from chat.registry import Registry


def _progress_printer(stream: Any = None) -> Callable[[int, int], None]:
    """A progress callback drawing on stderr: tqdm when it is installed, else a plain line."""
    stream = stream or sys.stderr
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    bar: Any = None
    last_pct = -1

    def update(done: int, total: int) -> None:
        nonlocal bar, last_pct
        if total == 0:
            return
        if tqdm is not None:
            if bar is None:
                bar = tqdm(total=total, unit="reply", desc="batch", file=stream, dynamic_ncols=True)
            bar.update(done - bar.n)
            if done >= total:
                bar.close()
            return
        pct = done * 100 // total
        if stream.isatty():
            stream.write(f"\rbatch: {done}/{total} ({pct}%)" + ("\n" if done >= total else ""))
            stream.flush()
        elif pct // 10 != last_pct // 10 or done >= total:
            stream.write(f"batch: {done}/{total} ({pct}%)\n")
            stream.flush()
        last_pct = pct

    return update


def _unsent_settings(registry: Registry, models: Sequence[str], given: Sequence[str]) -> list[str]:
    """Notes for the settings given on the command line that a model does not take (it runs without them)."""
    notes = []
    for ref in models:
        try:
            provider, info = registry.resolve(ref)
        except ChatError:
            continue  # run_batch refuses it with its own message
        taken = (info.params or provider.accepts) & provider.accepts
        unsent = [f"--{name.replace('_', '-')}" for name in given if name not in taken]
        if unsent:
            notes.append(f"note: {info.ref} does not take {' or '.join(unsent)}; its replies are made without it.")
    return notes


def _skips(summary: BatchSummary) -> str | None:
    """Why fewer pairs ran than the job holds (the README's resume rules), or None when every pair ran."""
    parts = []
    if summary.skipped:
        parts.append(f"{summary.skipped} pair(s) skipped: already done (the output has a row without an error)")
    if summary.retried:
        parts.append(f"{summary.retried} run again: the output had only error rows for them")
    return "; ".join(parts) + "." if parts else None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m compare.batch",
        description="Run every prompt of a file through one or more models; results go to a JSONL file "
                    "(resumable: run the same command again to finish or retry failed rows).",
    )
    p.add_argument("prompts", help='prompts file: JSONL rows {"id": ..., "prompt": ..., "system": ..., "files": [...]} '
                                   "or .txt, one per line (files: relative to the prompts file's folder)")
    p.add_argument("--models", required=True, action="append",
                   help="comma-separated provider:model references (the flag may be repeated)")
    p.add_argument("--out", required=True, help="results file (JSONL), appended to")
    p.add_argument("--concurrency", type=int, default=4, help="turns running at once (default 4)")
    p.add_argument("--system", help="system prompt for prompts without their own")
    p.add_argument("--max-tokens", type=int, help="longest reply, in tokens (default: the chat default)")
    p.add_argument("--temperature", type=float, help="sampling temperature (models that refuse it ignore it)")
    p.add_argument("--prices", help="prices file (TOML/JSON) for the cost column; default PARLEY_PRICES_FILE or ./prices.toml")
    p.add_argument("--csv", help="also write the final rows of this job as CSV to this path")
    p.add_argument("--summary", help="also write the summary as JSON to this path: per model n, score_mean, score_ci "
                                     "and the run's numbers; paired comparisons of every two models (compare/README.md)")
    p.add_argument("--experiment", help="also write the experiment file (prompts, settings, outputs, scores, the "
                                        "reproducibility card, with a manifest of hashes) here: compare/README.md")
    p.add_argument("--tools", action="store_true", help="let models that support tools call them (calculator, time; PARLEY_TOOLS_MODULE)")
    p.add_argument("--judge", action="append", help="comma-separated judge models (provider:model): each judges every "
                                                    "two models' answers per prompt in both orders; verdicts go to "
                                                    "OUT.judges.jsonl and the summary's `judges` (compare/README.md)")
    p.add_argument("--judge-rubric", action="store_true", help="the judges also rate each answer 1-10 (shown as 0-1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point. Exit codes: 0 all pairs succeeded, 1 some rows are errors, 2 bad input, 130 interrupted."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from chat.registry import Registry, Settings, load_dotenv_file

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    models = [m.strip() for group in args.models for m in group.split(",") if m.strip()]
    judges = [m.strip() for group in args.judge or [] for m in group.split(",") if m.strip()]
    if args.judge_rubric and not judges:
        return fail("--judge-rubric needs --judge MODEL.")
    judged: list[JudgedRun] = []
    try:
        prompts = load_prompts(args.prompts)
        files: dict[str, list[Attachment]] = {}
        if any(p.files for p in prompts):
            from compare.batch_files import limits_from_env, load_prompt_files

            files = load_prompt_files(prompts, Path(args.prompts).parent, limits_from_env())
        kwargs: dict[str, Any] = {}
        if args.max_tokens is not None:
            kwargs["max_tokens"] = args.max_tokens
        if args.temperature is not None:
            kwargs["temperature"] = args.temperature
        try:
            params = Params(**kwargs)
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            errors: list[dict[str, Any]] = getattr(e, "errors", lambda: [])()
            detail = "; ".join(f"--{'-'.join(map(str, x['loc'])).replace('_', '-')}: {x['msg']}" for x in errors) or str(e)
            raise BatchError(f"Bad generation setting ({detail}).") from e
        prices = PriceTable.from_file(args.prices) if args.prices else PriceTable.from_env()
        for problem in prices.problems:
            print(f"warning: {problem}", file=sys.stderr)
    except (ChatError, PriceError) as e:
        return fail(str(e))

    load_dotenv_file(".env")
    from chat import tracing

    tracing.setup()  # only with OTEL_EXPORTER_OTLP_ENDPOINT: a batch span, a span per pair (flushed as the command exits)
    settings = Settings.from_env()
    for problem in settings.problems:
        print(f"warning: {problem}", file=sys.stderr)

    async def go() -> BatchSummary:
        registry = Registry.from_settings(settings)
        registry.after_setup = "then run the command again"  # not "restart": .env is read on every run
        for note in _unsent_settings(registry, models, [k for k in ("temperature", "max_tokens") if k in kwargs]):
            print(note, file=sys.stderr)
        try:
            toolbox = None
            if args.tools:
                from chat.tools import toolbox_from_env

                toolbox = toolbox_from_env()
            summary = await run_batch(registry, prompts, models, out_path=args.out, concurrency=args.concurrency,
                                      params=params, system=args.system, prices=prices, progress=_progress_printer(),
                                      tools=toolbox, files=files)
            if judges:  # after the run, on its final rows: compare/judge_run.py
                judged.append(await judge_rows(registry, summary.rows, judges, rubric=args.judge_rubric, prices=prices))
            return summary
        finally:
            await registry.aclose()

    try:
        summary = asyncio.run(go())
    except ChatError as e:
        return fail(str(e))
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished rows are in {args.out}; run the same command again to resume.", file=sys.stderr)
        return 130

    print(summary.to_markdown())
    note = f"\n{summary.ran} run, {summary.skipped} already done, {summary.errors} with errors"
    if summary.elapsed_s is not None:
        note += f", {summary.elapsed_s:.1f} s"
    print(note + f". Results: {args.out}")
    skips = _skips(summary)
    if skips:
        print(skips)
    if summary.ignored_lines:
        print(f"warning: {summary.ignored_lines} unreadable line(s) in {args.out} were ignored.", file=sys.stderr)
    if args.csv:
        Path(args.csv).write_text(rows_to_csv(summary.rows), encoding="utf-8")
    if judged:
        Path(args.out).with_suffix(".judges.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in judged[0].rows()), encoding="utf-8")
        print("\nJudges:\n" + judged[0].to_markdown())
    if args.summary:
        doc = summary.to_json() | ({"judges": judged[0].summary()} if judged else {})
        Path(args.summary).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.experiment:
        from compare.experiment import build, dumps, summary_doc

        doc = build(prompts=prompts, models=[m.model for m in summary.models], params=params.model_dump(exclude_none=True),
                    system=args.system, rows=summary.rows, summary=summary_doc(summary), concurrency=args.concurrency,
                    judges=judged[0].rows() if judged else None)
        Path(args.experiment).write_bytes(dumps(doc))
    return 1 if summary.errors else 0
