"""Text cleaning and trimming a conversation to a model's context budget."""

from __future__ import annotations

import re
from collections.abc import Sequence

from chat.types import Message

#: Used when a model's context window is unknown: small enough for most local models.
DEFAULT_CONTEXT_WINDOW = 32_768

# C0/C1 control characters except tab, newline and carriage return.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Drop control characters and lone surrogates (which no provider or database accepts)."""
    if not text:
        return ""
    text = _CONTROL.sub("", text)
    # Lone surrogates come from broken clipboards and JSON with "\\ud800": replace them with U+FFFD
    # (as storage does), never crash the database, the provider call or the event stream.
    return _SURROGATE.sub("\ufffd", text)


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: about four characters a token, never zero for non-empty text."""
    return (len(text) + 3) // 4


def message_tokens(message: Message) -> int:
    """Estimated tokens of one message, with a small per-message overhead for role markers."""
    tokens = 4 + estimate_tokens(message.content)
    for call in message.tool_calls:
        tokens += estimate_tokens(call.name) + estimate_tokens(call.arguments)
    return tokens


def trim_messages(
    messages: Sequence[Message], context_window: int | None, reserve_output: int
) -> tuple[list[Message], int]:
    """The system prompts plus the newest messages that fit; returns (kept, how many were left out).

    The newest message is always kept (the provider reports it if even that is too long).
    A tool result is never kept without the assistant message that asked for it.
    """
    window = context_window or DEFAULT_CONTEXT_WINDOW
    budget = window - min(reserve_output, window // 2)
    system = [m for m in messages if m.role == "system"]
    rest = [m for m in messages if m.role != "system"]
    used = sum(message_tokens(m) for m in system)
    kept: list[Message] = []
    for m in reversed(rest):
        cost = message_tokens(m)
        if kept and used + cost > budget:
            break
        kept.append(m)
        used += cost
    kept.reverse()
    while len(kept) > 1 and kept[0].role == "tool":
        kept.pop(0)
    return system + kept, len(rest) - len(kept)
