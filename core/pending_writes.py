"""Chat turns the database could not take: kept in memory (bounded) and written, in order, once it is back.

While the database is down a reply still streams; losing the turn would also split the conversation,
since the next turn after recovery would not find the earlier one stored. So the turn is kept here and
written before the same owner's next turn is saved (and by a retry loop with backoff meanwhile), which
lets that next turn continue the same conversation with the earlier context.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.store import same_turns, start_turn
from storage import repository as repo
from storage.errors import StorageError, StorageUnavailable

log = logging.getLogger("parley.pending")

#: Turns kept at most, all owners together; beyond it the oldest is dropped (and its owner told).
DEFAULT_LIMIT = 200
#: Owners whose written chains and dropped counts are remembered (least recently used go first).
_OWNERS_REMEMBERED = 1000
#: Written turns remembered per owner, to find the conversation a chat without an id belongs to.
_CHAINS_PER_OWNER = 20

Db = Callable[..., Awaitable[Any]]


@dataclass(eq=False)  # compared by identity: two identical turns are still two turns
class KeptTurn:
    """One turn waiting for the database: the user message, the reply and its metrics."""

    owner: str
    #: The conversation the chat had open; None when the turn was to start a new one.
    conversation_id: str | None
    #: The stored user texts the chat showed before this turn (what start_turn checks against the store).
    shown: tuple[str, ...]
    content: str
    #: start_turn's provider, model, system_prompt and params.
    begin: dict[str, Any]
    #: finish_turn's reply, finish reason, metrics and tool calls.
    finish: dict[str, Any]
    #: The stored reply placeholder, once the user message is in (then only the reply is missing).
    message_id: str | None = None


class PendingWrites:
    """A bounded FIFO of kept turns with a retry loop; one per process (the chat handler's)."""

    def __init__(self, db: Db, *, limit: int = DEFAULT_LIMIT, first_delay: float = 1.0, max_delay: float = 30.0):
        self._db = db
        self._limit = limit
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._queue: deque[KeptTurn] = deque()
        self._lock: asyncio.Lock | None = None
        self._retry: asyncio.Task[None] | None = None
        self._written: OrderedDict[str, deque[tuple[tuple[str, ...], str]]] = OrderedDict()
        self._dropped: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._queue)

    def has(self, owner: str) -> bool:
        """True while some turn of this owner waits for the database."""
        return any(t.owner == owner for t in self._queue)

    def keep(self, turn: KeptTurn) -> None:
        """Queue a turn; on overflow the oldest turn is dropped with a warning (its owner is told later)."""
        self._queue.append(turn)
        while len(self._queue) > self._limit:
            lost = self._queue.popleft()
            log.warning("the database has been unavailable too long: a kept turn of %s was dropped (%d kept at most)",
                        lost.owner, self._limit)
            self._count_dropped(lost.owner)
        self._start_retry()

    def take_dropped(self, owner: str) -> int:
        """How many of this owner's kept turns were lost since the last call (so the user can be told once)."""
        return self._dropped.pop(owner, 0)

    def conversation_for(self, owner: str, shown: Sequence[str]) -> str | None:
        """The conversation a chat without an id continues: one that a kept turn started, with these user texts."""
        for texts, conversation_id in reversed(self._written.get(owner, ())):
            if same_turns(list(shown), list(texts)):
                return conversation_id
        return None

    async def flush(self, owner: str | None = None) -> bool:
        """Write the kept turns (of one owner, or all) in order; True when none of them is left waiting."""
        if owner is not None and not self.has(owner):
            return True  # the common case: nothing kept, no lock to wait for
        async with self._get_lock():
            for turn in [t for t in self._queue if owner is None or t.owner == owner]:
                try:
                    await self._write(turn)
                except StorageUnavailable:
                    return False  # still down: keep this one and everything after it, in order
                except StorageError as e:
                    # Refused for good (e.g. the conversation was deleted meanwhile): retrying cannot help.
                    log.warning("a kept turn of %s could not be written and was dropped: %s", turn.owner, e)
                    self._count_dropped(turn.owner)
                if turn in self._queue:  # overflow may have dropped it meanwhile
                    self._queue.remove(turn)
            return owner is None or not self.has(owner)

    async def _write(self, turn: KeptTurn) -> None:
        if turn.message_id is None:
            ids = await self._db(
                start_turn, owner=turn.owner,
                conversation_id=turn.conversation_id or self.conversation_for(turn.owner, turn.shown),
                history_user_texts=list(turn.shown), content=turn.content, **turn.begin,
            )
            # Remembered at once: a retry after a failed finish must not start the turn a second time.
            turn.message_id, turn.conversation_id = str(ids.assistant_message_id), str(ids.conversation_id)
        await self._db(repo.finish_turn, owner=turn.owner, message_id=turn.message_id, **turn.finish)
        self._remember(turn.owner, (*turn.shown, turn.content), str(turn.conversation_id))

    def _remember(self, owner: str, texts: tuple[str, ...], conversation_id: str) -> None:
        chains = self._written.setdefault(owner, deque(maxlen=_CHAINS_PER_OWNER))
        self._written.move_to_end(owner)
        chains.append((texts, conversation_id))
        while len(self._written) > _OWNERS_REMEMBERED:
            self._written.popitem(last=False)

    def _count_dropped(self, owner: str) -> None:
        self._dropped[owner] = self._dropped.get(owner, 0) + 1
        self._dropped.move_to_end(owner)
        while len(self._dropped) > _OWNERS_REMEMBERED:
            self._dropped.popitem(last=False)

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:  # made on first use, inside the event loop that serves the chat
            self._lock = asyncio.Lock()
        return self._lock

    def _start_retry(self) -> None:
        if self._retry is None or self._retry.done():
            self._retry = asyncio.get_running_loop().create_task(self._retry_loop())

    async def _retry_loop(self) -> None:
        """Retry with exponential backoff and jitter until the queue is empty."""
        delay = self._first_delay
        while self._queue:
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            if await self.flush():
                delay = self._first_delay
            else:
                delay = min(delay * 2, self._max_delay)
