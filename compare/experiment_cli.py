"""`python -m compare.experiment show|replay FILE.json`: the experiment file's command line.

    python -m compare.experiment show FILE.json
    python -m compare.experiment replay FILE.json --out NEW.json [--diff DIFF.json] [--results NEW.jsonl]

`replay` runs the file's prompts × models again with its settings (system prompt, parameters) through the
batch engine, writes the new experiment file, and prints (and with --diff writes) the per-prompt diff.
Exit codes: 0 done and every output unchanged, 1 some output or score changed or a row failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chat.errors import ChatError
from chat.types import Attachment, Params
from compare.batch import BatchSummary, run_batch
from compare.experiment import ExperimentError, build, diff, dumps, models_of, prompts_of, read, summary_doc


def diff_markdown(d: dict[str, Any]) -> str:
    """The diff as a markdown table: one line per prompt and model."""
    lines = [f"{d['pairs']} pair(s): {d['unchanged']} unchanged, {d['changed']} changed.", "",
             "| prompt | model | output | score (old → new) |", "|---|---|---|---|"]
    for r in d["rows"]:
        out = "unchanged" if not r["text_changed"] else "changed"
        lines.append(f"| {r['prompt_id']} | {r['model']} | {out} | {r['old_score']} → {r['new_score']} |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m compare.experiment",
                                description="Check, show and replay Parley experiment files (compare/README.md).")
    sub = p.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", help="check the file's hashes and print its results")
    show.add_argument("file")
    replay = sub.add_parser("replay", help="run the file's prompts and models again with its settings; diff the outputs")
    replay.add_argument("file")
    replay.add_argument("--out", required=True, help="the new experiment file")
    replay.add_argument("--diff", help="also write the diff as JSON here")
    replay.add_argument("--results", help="the new run's JSONL results (default: a temporary file)")
    replay.add_argument("--files-dir", help="the folder holding the files the prompts name (if they name any)")
    replay.add_argument("--concurrency", type=int, help="replies at once (default: the file's, else 4)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        old = read(args.file)
        prompts = prompts_of(old)
    except ExperimentError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    if args.command == "show":
        rows = [{"prompt_id": r.get("prompt_id"), "model": r.get("model"), "score": r.get("score"),
                 "text": (r.get("text") or "")[:80]} for r in old["results"]]
        print(f"{len(prompts)} prompt(s) × {len(models_of(old))} model(s); app {old['manifest']['app_version']}, "
              f"made {old['manifest']['created_at']}. Hashes check out.")
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
        return 0
    return _replay(args, old, prompts)


def _replay(args: argparse.Namespace, old: dict[str, Any], prompts: list[Any]) -> int:
    from chat.registry import Registry, Settings, load_dotenv_file

    settings = old["settings"]
    try:
        params = Params(**(settings.get("params") or {}))
    except ValueError as e:
        print(f"error: the file's parameters are not valid here ({e}).", file=sys.stderr)
        return 2
    files: dict[str, list[Attachment]] = {}
    if any(p.files for p in prompts):
        if not args.files_dir:
            print("error: the prompts name files; give the folder that holds them with --files-dir.", file=sys.stderr)
            return 2
        from compare.batch_files import limits_from_env, load_prompt_files

        try:
            files = load_prompt_files(prompts, Path(args.files_dir), limits_from_env())
        except ChatError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    load_dotenv_file(".env")
    env = Settings.from_env()
    concurrency = args.concurrency or settings.get("concurrency") or 4
    models = models_of(old)

    async def go(out: Path) -> BatchSummary:
        registry = Registry.from_settings(env)
        try:
            return await run_batch(registry, prompts, models, out_path=out, concurrency=concurrency, params=params,
                                   system=settings.get("system"), files=files)
        finally:
            await registry.aclose()

    with tempfile.TemporaryDirectory(prefix="parley-replay-") as tmp:
        out = Path(args.results) if args.results else Path(tmp) / "replay.jsonl"
        try:
            summary = asyncio.run(go(out))
        except ChatError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    new = build(prompts=prompts, models=models, params=settings.get("params") or {}, system=settings.get("system"),
                rows=summary.rows, summary=summary_doc(summary), concurrency=concurrency,
                replay_of=hashlib.sha256(dumps(old)).hexdigest())
    Path(args.out).write_bytes(dumps(new))
    d = diff(old, new)
    if args.diff:
        Path(args.diff).write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(diff_markdown(d))
    return 1 if d["changed"] or summary.errors else 0
