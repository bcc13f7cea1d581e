"""Argument schemas every provider accepts: a pydantic model's JSON schema, self-contained and plain."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# Keys that only label a schema; providers ignore them at best (Gemini's older Schema refuses some).
_DROPPED = frozenset({"title", "$schema", "$id", "examples"})


class SchemaError(ValueError):
    """A pydantic model whose schema cannot be offered to a model (recursive, not an object)."""


def argument_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of a tool's arguments: `$ref`s inlined, titles dropped, `X | None` shown as X.

    OpenAI, Anthropic and Gemini (`parametersJsonSchema`) accept `$defs` nowadays, but OpenAI-compatible
    local servers (llama.cpp grammars, Ollama) and Gemini's older `parameters` field do not, so the
    schema is made self-contained. An optional field is offered as its plain type: the model leaves it
    out to mean None, and validation still accepts an explicit null.
    """
    raw = model.model_json_schema()
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _clean(raw, defs, ())  # a dict in, a dict out
    if schema.get("type") != "object":
        raise SchemaError(f"the arguments of a tool must be an object, not {schema.get('type')!r}")
    schema.setdefault("properties", {})
    return schema


def clean_schema(raw: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema from elsewhere (an MCP server's tool) made as plain as `argument_schema`'s; SchemaError if not an object."""
    schema: dict[str, Any] = _clean(raw, raw.get("$defs", raw.get("definitions", {})), ())
    schema.pop("definitions", None)
    if schema.get("type", "object") != "object":
        raise SchemaError(f"the arguments of a tool must be an object, not {schema.get('type')!r}")
    schema["type"] = "object"
    schema.setdefault("properties", {})
    return schema


def _clean(node: Any, defs: dict[str, Any], seen: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_clean(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        if name in seen:
            raise SchemaError(f"recursive argument models ({' -> '.join((*seen, name))}) cannot be offered as a tool")
        if name not in defs:
            raise SchemaError(f"unresolved reference {node['$ref']!r} in the argument schema")
        # Sibling keys (a field's description next to its $ref) win over the definition's own.
        target = dict(_clean(defs[name], defs, (*seen, name)))
        target.update({k: _clean(v, defs, seen) for k, v in node.items() if k != "$ref" and k not in _DROPPED})
        return target
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or key == "$defs":
            continue
        if key == "properties" and isinstance(value, dict):
            # Property names are data, not schema keywords: a field called "title" stays.
            out[key] = {name: _clean(sub, defs, seen) for name, sub in value.items()}
        else:
            out[key] = _clean(value, defs, seen)
    return _collapse_optional(out)


def _collapse_optional(node: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [X, {"type": "null"}]` becomes X (keeping the outer description and a non-null default)."""
    options = node.get("anyOf")
    if not isinstance(options, list):
        return node
    kept = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
    if len(kept) == len(options):
        return node
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if rest.get("default", 0) is None:
        del rest["default"]
    if len(kept) == 1 and isinstance(kept[0], dict):
        return {**kept[0], **rest}
    return {**rest, "anyOf": kept}
