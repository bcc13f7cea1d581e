"""Scored batch prompts: a prompt's `reference` and `checks`, validated when the file is read, and a reply's score.

    {"id": "q1", "prompt": "2+2?", "reference": "4"}
    {"id": "q2", "prompt": "...", "checks": [{"type": "contains", "value": "Paris"},
                                             {"type": "regex", "pattern": "^\\d{4}$"},
                                             {"type": "json_schema", "schema": {"type": "object", "required": ["a"]}},
                                             {"type": "number", "value": 3.14, "tolerance": 0.01},
                                             {"type": "exact", "value": "Yes"}, {"type": "json_valid"}]}

A reply's score is the share of its prompt's checks passed (the reference is one check). Every check is
parsed here before anything runs, so a bad one refuses the file with a message naming the prompt; no
provider is called. compare/README.md documents each type and the JSON Schema keywords supported.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CHECK_TYPES = ("reference", "exact", "contains", "regex", "number", "json_valid", "json_schema")
#: JSON Schema keywords the json_schema check understands (others are refused, never silently ignored).
SCHEMA_KEYWORDS = frozenset({"type", "enum", "const", "properties", "required", "additionalProperties", "items",
                             "minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum",
                             "exclusiveMinimum", "exclusiveMaximum", "anyOf"})
#: Keywords that only describe a schema; accepted and ignored.
SCHEMA_NOTES = frozenset({"$schema", "$id", "title", "description", "examples", "default", "$comment"})
_SCHEMA_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
MAX_PATTERN = 500  # characters: a long regex is a file error, not a slow scorer
# The last number of a reply: optional sign, digits with optional thousands commas, decimals, exponent.
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")
_FENCE = re.compile(r"^```[\w+-]*\s*\n(.*)\n\s*```$", re.DOTALL)


class CheckError(ValueError):
    """A check that cannot be used; the message says what to fix (the caller names the prompt)."""


@dataclass(frozen=True, slots=True)
class Check:
    """One parsed check. `value` is the text or number to compare; `pattern` a compiled regex; `schema` a schema."""

    type: str
    value: Any = None
    tolerance: float = 0.0
    ignore_case: bool = False
    pattern: re.Pattern[str] | None = None
    schema: Any = None


# -- parsing --------------------------------------------------------------------------------------


def parse_checks(reference: Any, checks: Any) -> tuple[Check, ...]:
    """A prompt's `reference` and `checks` as Checks (the reference first); CheckError names the bad one."""
    out: list[Check] = []
    if reference is not None:
        if not isinstance(reference, (str, int, float)) or isinstance(reference, bool):
            raise CheckError(f'"reference" must be text (or a number), got {_kind(reference)}.')
        out.append(Check("reference", str(reference).strip()))
    if checks is None:
        return tuple(out)
    if not isinstance(checks, list):
        raise CheckError('"checks" must be a list like [{"type": "contains", "value": "..."}].')
    for n, spec in enumerate(checks, 1):
        try:
            out.append(_parse_check(spec))
        except CheckError as e:
            raise CheckError(f"check {n}: {e}") from None
    return tuple(out)


def _parse_check(spec: Any) -> Check:
    if not isinstance(spec, dict) or "type" not in spec:
        raise CheckError('each check is an object with a "type" (' + ", ".join(CHECK_TYPES[1:]) + ").")
    kind = spec["type"]
    if kind not in CHECK_TYPES[1:]:
        raise CheckError(f"unknown type {kind!r}; use one of " + ", ".join(CHECK_TYPES[1:]) + ".")
    allowed = {"type", *{"exact": ("value", "ignore_case"), "contains": ("value", "ignore_case"),
                         "regex": ("pattern", "ignore_case"), "number": ("value", "tolerance"),
                         "json_valid": (), "json_schema": ("schema",)}[kind]}
    extra = sorted(set(spec) - allowed)
    if extra:
        raise CheckError(f"{kind} does not take {', '.join(extra)} (it takes {', '.join(sorted(allowed))}).")
    ignore_case = spec.get("ignore_case", False)
    if not isinstance(ignore_case, bool):
        raise CheckError('"ignore_case" must be true or false.')
    if kind in ("exact", "contains"):
        value = spec.get("value")
        if not isinstance(value, str) or (kind == "contains" and not value):
            raise CheckError(f'{kind} needs "value": non-empty text.' if kind == "contains" else 'exact needs "value": text.')
        return Check(kind, value, ignore_case=ignore_case)
    if kind == "regex":
        pattern = spec.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise CheckError('regex needs "pattern": a regular expression (Python syntax).')
        if len(pattern) > MAX_PATTERN:
            raise CheckError(f"the pattern is {len(pattern)} characters long; at most {MAX_PATTERN}.")
        try:
            compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        except re.error as e:
            raise CheckError(f"the pattern {pattern!r} is not a valid regular expression ({e}).") from None
        return Check(kind, pattern, ignore_case=ignore_case, pattern=compiled)
    if kind == "number":
        value, tol = spec.get("value"), spec.get("tolerance", 0)
        if not _is_number(value) or value is None:
            raise CheckError('number needs "value": a number, e.g. {"type": "number", "value": 3.14, "tolerance": 0.01}.')
        if not _is_number(tol) or tol < 0:
            raise CheckError('"tolerance" must be a number of at least 0.')
        return Check(kind, float(value), tolerance=float(tol))
    if kind == "json_schema":
        schema = spec.get("schema")
        _check_schema(schema, "schema")
        return Check(kind, schema=schema)
    return Check(kind)


def _check_schema(schema: Any, where: str) -> None:
    """Refuse a schema that uses keywords this subset does not implement, or malformed ones."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise CheckError(f"{where} must be a JSON Schema object.")
    unknown = sorted(set(schema) - SCHEMA_KEYWORDS - SCHEMA_NOTES)
    if unknown:
        raise CheckError(f"{where} uses {', '.join(unknown)}, which is not supported; supported keywords: "
                         + ", ".join(sorted(SCHEMA_KEYWORDS)) + ".")
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        bad = [t for t in names if t not in _SCHEMA_TYPES]
        if bad or not names:
            raise CheckError(f"{where}.type must be one of {', '.join(_SCHEMA_TYPES)} (or a list of them).")
    if "enum" in schema and not isinstance(schema["enum"], list):
        raise CheckError(f"{where}.enum must be a list.")
    if "required" in schema and not (isinstance(schema["required"], list)
                                     and all(isinstance(k, str) for k in schema["required"])):
        raise CheckError(f"{where}.required must be a list of property names.")
    for key in ("minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in schema and not _is_number(schema[key]):
            raise CheckError(f"{where}.{key} must be a number.")
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise CheckError(f"{where}.properties must be an object of schemas.")
    for name, sub in props.items():
        _check_schema(sub, f"{where}.properties.{name}")
    for key in ("items", "additionalProperties"):
        if key in schema:
            _check_schema(schema[key], f"{where}.{key}")
    if "anyOf" in schema:
        if not isinstance(schema["anyOf"], list) or not schema["anyOf"]:
            raise CheckError(f"{where}.anyOf must be a non-empty list of schemas.")
        for n, sub in enumerate(schema["anyOf"]):
            _check_schema(sub, f"{where}.anyOf[{n}]")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _kind(v: Any) -> str:
    return "null" if v is None else type(v).__name__


# -- scoring --------------------------------------------------------------------------------------


def has_regex(checks: Sequence[Check]) -> bool:
    """Whether scoring runs a user's regex (the batch runs those in a worker process with a time limit)."""
    return any(c.type == "regex" for c in checks)


def score_reply(checks: Sequence[Check], text: str, *, skip_regex: bool = False) -> tuple[float | None, list[dict[str, Any]]]:
    """(share of checks passed, [{"type", "passed"}] per check); (None, []) for a prompt without checks.

    With `skip_regex`, regex checks count as failed with an "error" (used when the regex ran out of time).
    """
    if not checks:
        return None, []
    results: list[dict[str, Any]] = []
    for c in checks:
        if skip_regex and c.type == "regex":
            results.append({"type": c.type, "passed": False, "error": f"not run: a pattern of this batch took more than "
                                                                      f"{REGEX_TIMEOUT_S:g} s"})
            continue
        results.append({"type": c.type, "passed": passes(c, text)})
    return sum(r["passed"] for r in results) / len(results), results


def passes(check: Check, text: str) -> bool:
    """Whether the reply `text` passes one check."""
    t = check.type
    if t == "reference":
        return text.strip().casefold() == str(check.value).casefold()
    if t in ("exact", "contains"):
        got, want = (text.casefold(), check.value.casefold()) if check.ignore_case else (text, check.value)
        return got.strip() == want.strip() if t == "exact" else want in got
    if t == "regex":
        assert check.pattern is not None
        return check.pattern.search(text) is not None
    if t == "number":
        found = last_number(text)
        return found is not None and abs(found - check.value) <= check.tolerance + 1e-12 * max(1.0, abs(check.value))
    ok, value = _json_of(text)
    if t == "json_valid":
        return ok
    return ok and conforms(value, check.schema)


def last_number(text: str) -> float | None:
    """The last number written in `text` ("1,234.5" → 1234.5), or None."""
    for m in reversed(list(_NUMBER.finditer(text))):
        token = m.group(0)
        if any(ch.isdigit() for ch in token):
            try:
                return float(token.replace(",", ""))
            except ValueError:
                continue
    return None


def _json_of(text: str) -> tuple[bool, Any]:
    """The reply as JSON; a reply that is one fenced code block (```json ... ```) is read as its content."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        return True, json.loads(body)
    except (json.JSONDecodeError, RecursionError):
        return False, None


def conforms(value: Any, schema: Any) -> bool:
    """Whether `value` (parsed JSON) matches `schema` under the supported subset (SCHEMA_KEYWORDS)."""
    if isinstance(schema, bool):
        return schema
    if "anyOf" in schema and not any(conforms(value, s) for s in schema["anyOf"]):
        return False
    types = schema.get("type")
    if types is not None and not any(_is_type(value, t) for t in (types if isinstance(types, list) else [types])):
        return False
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        return False
    if "const" in schema and not _same(value, schema["const"]):
        return False
    if isinstance(value, str) and not _within(len(value), schema.get("minLength"), schema.get("maxLength")):
        return False
    if _is_type(value, "number"):
        if not _within(value, schema.get("minimum"), schema.get("maximum")):
            return False
        if "exclusiveMinimum" in schema and not value > schema["exclusiveMinimum"]:
            return False
        if "exclusiveMaximum" in schema and not value < schema["exclusiveMaximum"]:
            return False
    if isinstance(value, list):
        if not _within(len(value), schema.get("minItems"), schema.get("maxItems")):
            return False
        if "items" in schema and not all(conforms(v, schema["items"]) for v in value):
            return False
    if isinstance(value, dict):
        if any(k not in value for k in schema.get("required", ())):
            return False
        props: Mapping[str, Any] = schema.get("properties", {})
        for k, v in value.items():
            if k in props:
                if not conforms(v, props[k]):
                    return False
            elif "additionalProperties" in schema and not conforms(v, schema["additionalProperties"]):
                return False
    return True


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return _is_type(value, "number") and float(value).is_integer()
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}[name] is type(value) or (
        name == "object" and isinstance(value, dict))


def _same(a: Any, b: Any) -> bool:
    # JSON equality: 1 == 1.0, but true is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _within(n: float, lo: Any, hi: Any) -> bool:
    return (lo is None or n >= lo) and (hi is None or n <= hi)


#: Seconds a reply's regex checks may take (in a worker process, which is killed after it): a user's
#: pattern with catastrophic backtracking must not hold up the server.
REGEX_TIMEOUT_S = 5.0


class Scorer:
    """Scores one run's replies; regex checks run in a worker process (chat/offload.py) under REGEX_TIMEOUT_S.

    After one pattern runs out of time, the run's remaining regex checks fail without running: the file
    workers are shared with every user's uploads, so one prompts file may hold them for one timeout, not
    one per reply. (With PARLEY_FILE_WORKERS=0 the operator has chosen to run such work in-process.)
    """

    def __init__(self) -> None:
        self.regex_timed_out = False

    async def score(self, checks: Sequence[Check], text: str) -> tuple[float | None, list[dict[str, Any]]]:
        """`score_reply`, with the regex checks run as above."""
        if not has_regex(checks):
            return score_reply(checks, text)
        if self.regex_timed_out:
            return score_reply(checks, text, skip_regex=True)
        import asyncio

        from chat import offload

        try:
            return await asyncio.to_thread(offload.run, score_reply, tuple(checks), text, timeout=REGEX_TIMEOUT_S)
        except offload.OffloadError:
            self.regex_timed_out = True
            return score_reply(checks, text, skip_regex=True)
