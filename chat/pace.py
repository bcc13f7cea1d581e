"""When the reader of a streaming reply next takes it: lets a provider's stream leave tokens in the socket until then.

A reply trickling in at 50 tokens a second arrives as one network read per token, and each read costs the whole
chain above it: the HTTP client's buffer, the SSE framing, the provider's generator, the turn's. The chat shows an
update at most every 50-500 ms (chat.turn.coalesce), so reading sooner than that only buys work. `Turn.updates`
sets `PACE` for the stream it runs, `coalesce` moves `Pace.due` to its next update, and a provider reader that can
wake when its body ends (chat.providers.openai's aiohttp body) waits for `due` between reads of a slow stream.
The first token is read at once, the end of the body wakes the reader at once, and nothing else sets PACE: batch
runs, the API and tests read as fast as before.
"""

from __future__ import annotations

from contextvars import ContextVar


class Pace:
    """The loop time (`asyncio` loop's clock) at which the reader of a stream next takes an update."""

    __slots__ = ("due",)

    def __init__(self) -> None:
        self.due = 0.0  # not before the first update: the first token is read at once


#: The pace of the stream being read in this task (set by chat.turn.Turn.updates for its pump task).
PACE: ContextVar[Pace | None] = ContextVar("parley_pace", default=None)
