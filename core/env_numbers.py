"""Numeric settings read from the environment, with the variable's name in every error."""

from __future__ import annotations

from collections.abc import Mapping


def number_at_least(env: Mapping[str, str], name: str, default: float, low: float) -> float:
    """`env[name]` as a finite number of at least `low` (`default` when unset or blank); ValueError names the variable."""
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError as e:
        raise ValueError(f"{name} must be a number, got {raw!r}") from e
    if not value >= low or value == float("inf"):
        raise ValueError(f"{name} must be at least {low:g}, got {raw!r}")
    return value
