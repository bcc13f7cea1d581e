"""The experiment file: one JSON document that captures a batch run (and optionally comparisons), with a manifest.

    python -m compare.experiment show FILE.json
    python -m compare.experiment replay FILE.json --out NEW.json [--diff DIFF.json] [--results NEW.jsonl]

Format (compare/README.md has the full description): an object with `format` ("parley.experiment"),
`manifest`, and the sections `settings`, `prompts`, `results`, `summary`, `comparisons`, `judges`. The
manifest holds the schema and app versions, the creation time, the sha256 of each section's canonical
JSON and of each output text. The file is written canonically (sorted keys, no spaces, UTF-8, one final
newline), so export → import → export gives the same bytes, and a changed byte in a section or an
output fails its hash on import. Nothing here touches a database or the UI.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from compare.batch import BatchSummary, Prompt
from compare.scoring import Check, CheckError, parse_checks

FORMAT = "parley.experiment"
SCHEMA_VERSION = 1
#: The hashed sections, in the order the README lists them.
SECTIONS: tuple[str, ...] = ("settings", "prompts", "results", "summary", "comparisons", "judges")


class ExperimentError(ValueError):
    """A file that is not a valid, untouched experiment file; the message says what is wrong."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


# -- canonical JSON and hashes ------------------------------------------------------------------------


def canonical(value: Any) -> str:
    """The one serialisation hashes and files use: sorted keys, fixed separators, no NaN, UTF-8 text kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_of(value: Any) -> str:
    """sha256 (hex) of a value's canonical JSON."""
    return hashlib.sha256(canonical(value).encode("utf-8")).hexdigest()


def text_sha256(text: str | None) -> str:
    return hashlib.sha256((text or "").encode("utf-8")).hexdigest()


def app_version() -> str:
    """Parley's version, from pyproject.toml (the app is not an installed package)."""
    try:
        with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


# -- prompts ----------------------------------------------------------------------------------------


def check_spec(check: Check) -> dict[str, Any]:
    """A parsed check back in the prompts file's form (compare/scoring.py's parse_checks reads it again)."""
    spec: dict[str, Any] = {"type": check.type}
    if check.type in ("exact", "contains"):
        spec["value"] = check.value
    elif check.type == "regex":
        spec["pattern"] = check.value
    elif check.type == "number":
        spec["value"], spec["tolerance"] = check.value, check.tolerance
    elif check.type == "json_schema":
        spec["schema"] = check.schema
    if check.ignore_case:
        spec["ignore_case"] = True
    return spec


def prompt_record(p: Prompt) -> dict[str, Any]:
    """A prompt as the experiment file keeps it (the prompts file's keys)."""
    reference = next((c.value for c in p.checks if c.type == "reference"), None)
    return {"id": p.id, "prompt": p.prompt, "system": p.system, "files": list(p.files), "reference": reference,
            "checks": [check_spec(c) for c in p.checks if c.type != "reference"]}


def prompt_of(record: Mapping[str, Any]) -> Prompt:
    """A Prompt from the file's record (ExperimentError when its checks do not parse)."""
    try:
        checks = parse_checks(record.get("reference"), record.get("checks") or None)
    except CheckError as e:
        raise ExperimentError(f"prompt '{record.get('id')}': {e}") from e
    return Prompt(str(record["id"]), str(record["prompt"]), record.get("system"), tuple(record.get("files") or ()), checks)


# -- building, writing, reading ------------------------------------------------------------------------


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def summary_doc(summary: BatchSummary) -> dict[str, Any]:
    """A run's summary as an experiment keeps it: `--summary`'s document without the results file's path."""
    doc = summary.to_json()
    doc.pop("out_path", None)  # a (temporary) path on the machine that ran it: nothing a reader needs
    return doc


def build(*, prompts: Sequence[Prompt], models: Sequence[str], params: Mapping[str, Any], system: str | None,
          rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any] | None = None, concurrency: int | None = None,
          comparisons: Sequence[Mapping[str, Any]] = (), judges: Sequence[Mapping[str, Any]] | None = None,
          created_at: str | None = None, replay_of: str | None = None) -> dict[str, Any]:
    """The experiment document of a batch run: `rows` are its final result rows (compare/batch.py's RESULT_FIELDS).

    `params` are the batch's settings (each row has the ones its model was sent); `comparisons` are
    compare export records (core/compare_export.py); `judges` the judge verdicts, or None where the app
    has no judges (the section is then null, and hashed as such).
    """
    order = {(p.id, m): i for i, (p, m) in enumerate((p, m) for p in prompts for m in models)}
    results = sorted((dict(r) for r in rows), key=lambda r: order.get((str(r["prompt_id"]), r["model"]), len(order)))
    settings = {"models": list(models), "params": dict(params), "system": system, "concurrency": concurrency,
                "replay_of": replay_of}
    doc: dict[str, Any] = {
        "format": FORMAT,
        "settings": settings,
        "prompts": [prompt_record(p) for p in prompts],
        "results": results,
        "summary": dict(summary) if summary is not None else None,
        "comparisons": [dict(c) for c in comparisons],
        "judges": None if judges is None else [dict(j) for j in judges],
    }
    doc["manifest"] = manifest(doc, created_at=created_at or _utc_now())
    # A round trip through JSON: what is written is exactly what is read back (tuples become lists, ...).
    parsed: dict[str, Any] = json.loads(canonical(doc))
    return parsed


def manifest(doc: Mapping[str, Any], *, created_at: str) -> dict[str, Any]:
    """The manifest of a document: versions, time, a sha256 per section and per output."""
    outputs = [{"prompt_id": str(r.get("prompt_id")), "model": r.get("model"), "sha256": text_sha256(r.get("text"))}
               for r in doc.get("results") or ()]
    return {"schema_version": SCHEMA_VERSION, "app_version": app_version(), "created_at": created_at,
            "hash": "sha256", "sections": {name: sha256_of(doc.get(name)) for name in SECTIONS}, "outputs": outputs}


def dumps(doc: Mapping[str, Any]) -> bytes:
    """The file's bytes: canonical JSON and one newline."""
    return (canonical(doc) + "\n").encode("utf-8")


def loads(data: bytes | str) -> dict[str, Any]:
    """Read and verify a file: its format, schema version, and every section and output hash (ExperimentError)."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExperimentError(f"This is not an experiment file: it is not valid JSON ({e}).") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ExperimentError(f'This is not an experiment file: it has no "format": "{FORMAT}".')
    m = doc.get("manifest")
    if not isinstance(m, dict) or not isinstance(m.get("sections"), dict) or not isinstance(m.get("outputs"), list):
        raise ExperimentError("The experiment file has no manifest (sections and outputs with their sha256).")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise ExperimentError(f"The experiment file has schema version {m.get('schema_version')!r}; this Parley "
                              f"reads version {SCHEMA_VERSION}.")
    extra = sorted(set(doc) - {"format", "manifest", *SECTIONS})
    if extra:
        raise ExperimentError(f"The experiment file has keys no manifest covers: {', '.join(extra)}.")
    for name in SECTIONS:
        if m["sections"].get(name) != sha256_of(doc.get(name)):
            raise ExperimentError(f"The experiment file's {name} section does not match its sha256 in the manifest: "
                                  "it was changed or damaged. Nothing was loaded.")
    results = doc.get("results")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise ExperimentError("The experiment file's results are not a list of rows.")
    if len(m["outputs"]) != len(results):
        raise ExperimentError("The manifest lists a different number of outputs than the file has results.")
    for out, row in zip(m["outputs"], results, strict=True):
        if not isinstance(out, dict) or out.get("sha256") != text_sha256(row.get("text")) or \
                out.get("prompt_id") != str(row.get("prompt_id")) or out.get("model") != row.get("model"):
            raise ExperimentError(f"The output of prompt '{row.get('prompt_id')}' by {row.get('model')} does not match "
                                  "its sha256 in the manifest: it was changed or damaged. Nothing was loaded.")
    if not isinstance(doc.get("prompts"), list) or not isinstance(doc.get("settings"), dict):
        raise ExperimentError("The experiment file has no prompts or settings.")
    for record in doc["prompts"]:
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or record.get("id") is None:
            raise ExperimentError("A prompt of the experiment file has no id or text.")
        prompt_of(record)
    return doc


def read(path: str | Path) -> dict[str, Any]:
    try:
        return loads(Path(path).read_bytes())
    except OSError as e:
        raise ExperimentError(f"Could not read {path}: {e.strerror or e}.") from e


# -- what a file holds, and the diff of two ---------------------------------------------------------


def prompts_of(doc: Mapping[str, Any]) -> list[Prompt]:
    return [prompt_of(r) for r in doc["prompts"]]


def models_of(doc: Mapping[str, Any]) -> list[str]:
    return [str(m) for m in doc["settings"].get("models") or ()]


def outputs(doc: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each (prompt id, model)'s result row."""
    return {(str(r.get("prompt_id")), str(r.get("model"))): r for r in doc.get("results") or ()}


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Per prompt and model: old and new output and score, and whether each changed.

    `{"pairs": n, "changed": n, "unchanged": n, "rows": [{"prompt_id", "model", "old_text", "new_text",
    "old_score", "new_score", "text_changed", "score_changed", "unchanged"}]}` in the old file's order, then
    pairs only the new file has.
    """
    a, b = outputs(old), outputs(new)
    keys = [*a, *(k for k in b if k not in a)]
    rows = []
    for pid, model in keys:
        o, n = a.get((pid, model), {}), b.get((pid, model), {})
        text_changed = (pid, model) not in a or (pid, model) not in b or o.get("text") != n.get("text")
        score_changed = o.get("score") != n.get("score")
        rows.append({"prompt_id": pid, "model": model, "old_text": o.get("text"), "new_text": n.get("text"),
                     "old_score": o.get("score"), "new_score": n.get("score"), "text_changed": text_changed,
                     "score_changed": score_changed, "unchanged": not (text_changed or score_changed)})
    changed = sum(1 for r in rows if not r["unchanged"])
    return {"pairs": len(rows), "changed": changed, "unchanged": len(rows) - changed, "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m compare.experiment`: the command line lives in compare/experiment_cli.py."""
    from compare.experiment_cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
