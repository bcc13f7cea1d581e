"""A reply's usage as every surface reports and stores it (one definition: chat.types; speed: compare.engine.speed_of)."""

from __future__ import annotations

from typing import Any

from chat.types import Usage


def usage_of(result: Any) -> Usage:
    """The usage contract of a turn or a tool loop: the provider's figures, or an estimate marked as one."""
    usage: Usage = result.usage  # TurnResult.usage or ToolLoopResult.usage
    return usage


def usage_columns(usage: Usage) -> dict[str, Any]:
    """A reply's usage as storage.repository.finish_turn's keyword arguments."""
    return {
        "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens, "cached_input_tokens": usage.cached_input_tokens,
        "cache_write_tokens": usage.cache_write_tokens, "usage_estimated": usage.estimated,
    }  # fmt: skip


def output_tokens_of(result: Any) -> int | None:
    """Output tokens (reasoning included): reported, else estimated (see usage_of for which)."""
    return usage_of(result).output_tokens
