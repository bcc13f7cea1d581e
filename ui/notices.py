"""What a folded notice says: its first sentence whole and its advice, so that neither needs unfolding.

Gradio folds a bubble with a metadata title and shows only the title. A notice's first sentence often
quotes the provider, whose own message has sentences of its own inside brackets ("(HTTP 500: The server
had an error while processing your request. Sorry about that!)"), and its last sentence is what to do
("Press Retry to try again."). Cutting at the first ". " left an open bracket and hid the advice.
"""

from __future__ import annotations

#: The longest a notice's folded title may be; the whole message is in the notice's body when it is cut.
NOTICE_TITLE_CHARS = 240
_CLOSERS = {"(": ")", "[": "]", "{": "}"}


def sentences(text: str) -> list[str]:
    """The sentences of a message, split only outside brackets: "(HTTP 500: Sorry. Try later)" stays whole."""
    out: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch in _CLOSERS:
            depth += 1
        elif ch in _CLOSERS.values():
            depth = max(0, depth - 1)
        elif ch in ".!?" and depth == 0 and (i + 1 == len(text) or text[i + 1] in " \n"):
            out.append(text[start : i + 1].strip())
            start = i + 1
    if text[start:].strip():
        out.append(text[start:].strip())
    return [s for s in out if s]


def _clip(sentence: str, limit: int) -> str:
    """`sentence` cut to `limit` characters with an ellipsis, closing any bracket the cut left open."""
    if len(sentence) <= limit:
        return sentence
    cut = sentence[: max(1, limit - 3)].rstrip()
    opened = [ch for ch in cut if ch in _CLOSERS or ch in _CLOSERS.values()]
    stack: list[str] = []
    for ch in opened:
        if ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif stack:
            stack.pop()
    return cut + "…" + "".join(reversed(stack))


def notice_title(text: str, limit: int = NOTICE_TITLE_CHARS) -> str:
    """What a folded notice shows: its first sentence whole (brackets closed) and, when there is one, its
    last sentence, which is the advice ("Press Retry to try again."), so neither needs unfolding."""
    whole = " ".join(text.split())
    parts = sentences(whole)
    if not parts:
        return ""
    if len(whole) <= limit:
        return whole
    if len(parts) == 1:
        return _clip(parts[0], limit)
    advice = parts[-1]
    first = _clip(parts[0], max(40, limit - len(advice) - 2))
    if first != parts[0] and parts[0][-1] in ".!?":
        first += parts[0][-1]  # the cut took the sentence's end: it still reads as one
    middle = " … " if len(parts) > 2 else " "
    return first + middle + advice
