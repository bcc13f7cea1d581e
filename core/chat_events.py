"""What a chat turn yields (core.chat.ChatTurns.send), in domain terms: the surface draws them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from chat.toolloop import ToolLoopResult
from chat.turn import TurnResult
from storage.models import TurnIds

#: A turn's live or final result: a plain turn's, or a tool loop's.
Result = TurnResult | ToolLoopResult
#: Why a message was refused before anything was sent or saved ("place": the API named a place in the
#: tree that cannot take the turn, see core.branching).
RefusalKind = Literal["empty", "too_long", "params", "model", "file", "rate_limited", "place"]


@dataclass(frozen=True)
class Refused:
    """The message was refused before anything happened: nothing was sent, saved or charged beyond the check."""

    message: str
    kind: RefusalKind
    #: The conversation the chat had open (unchanged).
    conversation_id: str | None


@dataclass(frozen=True)
class Flagged:
    """Moderation refused the message (no provider was called), or withheld the reply (core.moderation): the
    turn is stored, flagged, with this notice as its reply."""

    reply: str
    categories: tuple[str, ...]
    #: Storage notes (the turn was kept for later, or could not be saved).
    notes: tuple[str, ...]
    conversation_id: str | None
    #: The stored message ids, once saved (what an API client branches from).
    saved: TurnIds | None = None


@dataclass(frozen=True)
class Update:
    """The reply so far (or finished, when `result.done`), with storage notes and the conversation it is saved in."""

    result: Result
    #: The model as the user knows it ("OpenAI · GPT-4o").
    label: str
    notes: tuple[str, ...]
    conversation_id: str | None
    #: The stored message ids, once saved (the last Update of a saved turn always has them).
    saved: TurnIds | None = None
    #: The reply's reproducibility card (core/repro.py) once it has finished, else None.
    card: dict[str, Any] | None = None


ChatEvent = Refused | Flagged | Update
