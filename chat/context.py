"""Text cleaning and trimming a conversation to a model's context budget."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from chat.attachments import attachment_tokens
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


def message_tokens(message: Message, provider: str = "", count: Callable[[str], int] = estimate_tokens) -> int:
    """Tokens of one message by `count` (chat.tokens.TokenCounter for a model; default the 4-characters
    estimate), with a small per-message overhead for role markers.

    Attached files count with `provider`'s documented formula (chat.attachments.attachment_tokens).
    """
    tokens = 4 + count(message.content)
    for call in message.tool_calls:
        tokens += count(call.name) + count(call.arguments)
    for att in message.attachments:
        tokens += attachment_tokens(att, provider)
    return tokens


def left_out_note(name: str) -> str:
    """The line a message keeps in place of a file trimmed from it."""
    return f"[{name} was left out to fit the context window]"


def _drop_old_attachments(rest: list[Message], budget: int, provider: str,
                          count: Callable[[str], int] = estimate_tokens) -> list[Message]:
    """Take files out of the oldest messages first until the conversation fits `budget` (or no file is left to take).

    The newest user message keeps its files: they are what the question is about. Each message
    that loses a file keeps its text plus a note line naming the file, so the model knows it was there.
    """
    costs = [message_tokens(m, provider, count) for m in rest]
    total = sum(costs)
    if total <= budget:
        return rest
    protected = max((i for i, m in enumerate(rest) if m.role == "user"), default=len(rest) - 1)
    out = list(rest)
    for i, m in enumerate(rest):
        if total <= budget:
            break
        if i >= protected or not m.attachments:
            continue
        kept = list(m.attachments)
        notes: list[str] = []
        while kept and total > budget:
            att = kept.pop(0)
            total -= attachment_tokens(att, provider)
            notes.append(left_out_note(att.name))
        content = "\n\n".join(part for part in (m.content, "\n".join(notes)) if part)
        total += count(content) - count(m.content)
        out[i] = m.model_copy(update={"attachments": tuple(kept), "content": content})
    return out


def context_budget(context_window: int | None, reserve_output: int) -> int:
    """Tokens the messages may take: the window less the reply's room (at most half the window)."""
    window = context_window or DEFAULT_CONTEXT_WINDOW
    return window - min(reserve_output, window // 2)


def trim_messages(
    messages: Sequence[Message], context_window: int | None, reserve_output: int, provider: str = "",
    count: Callable[[str], int] = estimate_tokens,
) -> tuple[list[Message], int]:
    """The system prompts plus the newest messages that fit; returns (kept, how many were left out).

    Attached files go first, oldest first (their messages stay, with a note naming each file left
    out); then the oldest messages. The newest user message keeps its files, and the newest
    message is always kept (the provider reports it if even that is too long). A tool result is
    never kept without the assistant message that asked for it. `provider` picks the token formula
    for files; `count` counts text (chat.tokens.TokenCounter: the model's real encoding or a calibrated
    estimate). A conversation without files costs no more work than before.
    """
    budget = context_budget(context_window, reserve_output)
    system = [m for m in messages if m.role == "system"]
    rest = [m for m in messages if m.role != "system"]
    used = sum(message_tokens(m, count=count) for m in system)
    if any(m.attachments for m in rest):
        rest = _drop_old_attachments(rest, budget - used, provider, count)
    kept: list[Message] = []
    for m in reversed(rest):
        cost = message_tokens(m, provider, count)
        if kept and used + cost > budget:
            break
        kept.append(m)
        used += cost
    kept.reverse()
    while len(kept) > 1 and kept[0].role == "tool":
        kept.pop(0)
    return system + kept, len(rest) - len(kept)
