"""Long conversations: the older messages summarised once and sent in their place; the budget in the model's tokens.

When a conversation's path passes `SUMMARY_AFTER_MESSAGES` messages or no longer fits the model's budget, the
older part is summarised by the summary model and the model is sent the summary (a system message) plus the
newest messages. The summary is stored keyed by the last message it covers (storage.summaries), so every later
turn on a path through that message reuses it, and another branch never does. A new summary is made only when
the messages after the stored one pass the limit again; it folds the previous summary and the messages that
fell out since, so one summary call is made every few turns, never every turn.

Design (why inline, with a timeout): the turn that needs a summary waits for it up to `SUMMARY_TIMEOUT`
seconds, so that the reply it sends already has the meaning of the older part. A summary that takes longer
keeps running in the background and is stored for the next turn, while this reply goes out with plain trimming
and a notice; a failed one falls back the same way. Precomputing after every reply would spend a summary call
on conversations the user never continues. Thanks to the hysteresis (a new summary leaves only half the limit
after it) the wait happens on one turn in `SUMMARY_AFTER_MESSAGES / 4` or fewer.

Summary calls are the app's own: they are not charged to the user's rate limit (a user cannot trigger more than
one per few turns), and each is logged on the `parley.turns` log as event "summary" with its usage, which is
also stored with the summary (the dashboard does not count them yet). With the conversation's own model a summary
uses the same key as the chat (the user's own, when they gave one); a SUMMARY_MODEL uses the server's key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlmodel import Session

from chat.context import DEFAULT_CONTEXT_WINDOW, context_budget, message_tokens
from chat.errors import ChatError
from chat.providers.base import Provider
from chat.tokens import TokenCounter, clamp_scale
from chat.turn import Turn, TurnPolicy
from chat.types import Message, ModelInfo, Params
from core.branching import _path_to  # the path to a named message, as the /send API places a turn
from core.env_numbers import number_at_least
from core.store import FLAGGED_ERROR
from storage import repository as repo
from storage import summaries as stored
from storage.errors import StorageError
from storage.models import MessagePublic

if TYPE_CHECKING:
    from core.services import Services

log = logging.getLogger("parley.summaries")
turn_log = logging.getLogger("parley.turns")

INSTRUCTION = (
    "You summarise the earlier part of a conversation between a user and an AI assistant, so that the assistant "
    "can continue it without the full text. Keep what a later answer may need: facts, names, numbers, decisions, "
    "the user's goals, preferences and instructions, open questions, and code or data the user may refer back to. "
    "Write compact notes in the conversation's language, at most about 400 words. Add nothing that was not said."
)
#: How the summary is introduced to the model, in place of the messages it covers.
SUMMARY_HEADER = "Summary of the earlier part of this conversation ({n} messages, not repeated below):"
NOTE_USED = "📝 {n} earlier messages were sent to the model as a summary. Open to read it."
NOTE_FAILED = ("📝 The earlier messages could not be summarised ({why}), so the oldest were left out to fit the "
               "context instead. The next message tries again.")
#: The longest a summary call may run in the background after the reply stopped waiting for it.
BACKGROUND_LIMIT = 180.0
#: Conversations whose summaries LongContext keeps in memory (a few summaries each, ~1-3k characters a summary).
KNOWN_CONVERSATIONS = 2000


@dataclass(frozen=True, slots=True)
class SummarySettings:
    """SUMMARIES, SUMMARY_AFTER_MESSAGES, SUMMARY_MODEL, SUMMARY_TIMEOUT, SUMMARY_MAX_TOKENS."""

    enabled: bool = True
    after_messages: int = 20
    #: provider:model; "" is the conversation's own model.
    model: str = ""
    #: Seconds a reply waits for a summary it needs before it goes out with plain trimming.
    timeout: float = 20.0
    max_tokens: int = 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SummarySettings:
        def number(name: str, default: float, low: float) -> float:
            return number_at_least(env, name, default, low)

        switch = env.get("SUMMARIES", "on").strip().lower()
        if switch not in ("", "on", "off", "true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"SUMMARIES must be on or off, got {switch!r}")
        return cls(enabled=switch not in ("off", "false", "0", "no"),
                   after_messages=int(number("SUMMARY_AFTER_MESSAGES", 20, 4)),
                   model=env.get("SUMMARY_MODEL", "").strip(),
                   timeout=number("SUMMARY_TIMEOUT", 20.0, 0.1),
                   max_tokens=int(number("SUMMARY_MAX_TOKENS", 1024, 64)))


class Calibration:
    """Per conversation and model: the provider's reported input tokens over our estimate of what was sent.

    Kept in memory, not stored: the ratio comes from a turn this process just ran, storing it would add a write
    to every turn, and a restart (or another replica) only costs one uncalibrated turn, which the budget's reserve
    for the reply absorbs. Bounded (least recently used dropped first).
    """

    def __init__(self, size: int = 10_000):
        self._size = size
        self._ratios: OrderedDict[tuple[str, str], float] = OrderedDict()

    def scale(self, conversation_id: str | None, ref: str) -> float:
        if not conversation_id:
            return 1.0
        key = (conversation_id, ref)
        found = self._ratios.get(key)
        if found is None:
            return 1.0
        self._ratios.move_to_end(key)
        return found

    def learn(self, conversation_id: str | None, ref: str, reported: int | None, estimated: int) -> None:
        ratio = clamp_scale(reported, estimated)
        if not conversation_id or ratio is None:
            return
        self._ratios[(conversation_id, ref)] = ratio
        self._ratios.move_to_end((conversation_id, ref))
        while len(self._ratios) > self._size:
            self._ratios.popitem(last=False)


@dataclass
class Prepared:
    """What a turn sends: the messages (summary in place of the older part), its token counter, notes to show."""

    messages: list[Message]
    count: TokenCounter
    notes: list[str] = field(default_factory=list)


def summary_note(covered: int, text: str) -> str:
    """A notice whose first paragraph is its folded title and the rest (the summary) what opening it shows."""
    # Drawn as a reply is (markdown, with Gradio's HTML sanitising): it is model output like a reply.
    return NOTE_USED.format(n=covered) + "\n\n" + text


def _norm(text: str) -> str:
    return " ".join((text or "").split())


def aligned_ids(history: Sequence[Message], path: Sequence[MessagePublic]) -> list[uuid.UUID]:
    """For each message of `history` that matches the stored path (as core.branching.context_of builds the
    context: flagged turns and empty replies out, consecutive replies joined), the id of the last stored message
    it stands for; stops at the first message that does not match."""
    flagged = {m.parent_id for m in path if m.role == "assistant" and (m.error or "").startswith(FLAGGED_ERROR)}
    units: list[tuple[str, str, uuid.UUID]] = []
    for m in path:
        if m.id in flagged or (m.role == "assistant" and m.parent_id in flagged):
            continue
        if m.role == "user":
            units.append(("user", m.content, m.id))
        elif m.role == "assistant" and m.content:
            if units and units[-1][0] == "assistant":
                units[-1] = ("assistant", units[-1][1] + "\n\n" + m.content, m.id)
            else:
                units.append(("assistant", m.content, m.id))
    ids: list[uuid.UUID] = []
    for message, (role, content, mid) in zip(history, units, strict=False):
        if message.role != role or _norm(message.content) != _norm(content):
            break
        ids.append(mid)
    return ids


def read_path(*, session: Session, owner: str, conversation_id: str,
              upto: uuid.UUID | None) -> tuple[list[MessagePublic], list[stored.ContextSummary]]:
    """The stored path (to the current leaf, or to `upto`) and the summaries that cover a prefix of it."""
    detail = repo.get_conversation(session=session, owner=owner, conversation_id=conversation_id)
    path = detail.messages
    if upto is not None:
        path = _path_to(session, owner, path, uuid.UUID(str(conversation_id)), upto)
    found = stored.summaries_on_path(session=session, owner=owner, conversation_id=conversation_id,
                                     message_ids=[m.id for m in path])
    return path, found


def _digest(messages: Sequence[Message]) -> int:
    """A digest of messages' roles and texts (in-process only: Python's string hash is salted per process)."""
    return hash(tuple((m.role, m.content) for m in messages))


def transcript(previous: str, older: Sequence[Message]) -> str:
    """The summariser's input: the summary so far, then the messages that fell out since."""
    parts = [f"Summary so far:\n{previous}"] if previous else []
    parts += [f"{m.role.upper()}: {m.content}" for m in older if m.content.strip()]
    return "\n\n".join(parts)


class LongContext:
    """Summaries and token counting for chat turns; one per process (it holds the calibration and running summaries)."""

    def __init__(self, services: Services, settings: SummarySettings):
        self.s = services
        self.settings = settings
        self.calibration = Calibration()
        self._running: dict[tuple[str, uuid.UUID], asyncio.Task[str | None]] = {}
        # Per owner and conversation, the summaries made or read here lately with a digest of the messages they
        # cover: a turn that reuses one reads nothing from the database (reading a 200-message path costs 5-20 ms
        # of first-token time). The same messages have the same summary, whatever branch they are on.
        self._known: OrderedDict[tuple[str, str], list[tuple[int, int, str]]] = OrderedDict()

    def counter(self, conversation_id: str | None, info: ModelInfo) -> TokenCounter:
        return TokenCounter(info.provider, info.id, self.calibration.scale(conversation_id, info.ref))

    def learn(self, conversation_id: str | None, info: ModelInfo, turn: object) -> None:
        """After a plain turn: calibrate this conversation's estimate by the input tokens the provider reported."""
        if not isinstance(turn, Turn) or turn.result.input_tokens is None:
            return
        count = turn.count
        if not isinstance(count, TokenCounter) or count.exact:
            return  # the model's own encoding: nothing to calibrate
        sent = sum(message_tokens(m, info.provider, count) for m in turn.messages)  # the estimate: < 1 ms for 200
        self.calibration.learn(conversation_id, info.ref, turn.result.input_tokens, round(sent / count.scale))

    async def prepare(self, *, owner: str, conversation_id: str | None, upto: uuid.UUID | None,
                      messages: list[Message], info: ModelInfo, provider: Provider, params: Params) -> Prepared:
        """The messages to send for this turn: unchanged while the conversation is short and fits; else the
        stored summary (or a new one) plus the newest messages. Never raises: any failure sends what came in."""
        count = self.counter(conversation_id, info)
        cfg = self.settings
        system = [m for m in messages if m.role == "system"]
        rest = [m for m in messages if m.role != "system"]
        history, tail = rest[:-1], rest[-1:]
        if not cfg.enabled or not conversation_id or len(history) < 2:
            return Prepared(messages, count)
        budget = context_budget(info.context_window or DEFAULT_CONTEXT_WINDOW, params.max_tokens)
        budget -= sum(message_tokens(m, info.provider, count) for m in system + tail)
        costs = [message_tokens(m, info.provider, count) for m in history]
        if len(history) <= cfg.after_messages and sum(costs) <= budget:
            return Prepared(messages, count)  # the common case: no query, no call

        def sent(text: str, covered: int, notes: list[str], remember: bool = True) -> Prepared:
            if remember:
                self._remember(owner, conversation_id, history, covered, text)
            head = Message(role="system", content=SUMMARY_HEADER.format(n=covered) + "\n\n" + text)
            return Prepared(system + [head] + history[covered:] + tail, count, [*notes, summary_note(covered, text)])

        def enough(text: str, covered: int) -> bool:
            """The summary still serves: what follows it is within the limit and fits with it."""
            head = message_tokens(Message(role="system", content=text), info.provider, count)
            return len(history) - covered <= cfg.after_messages and head + sum(costs[covered:]) <= budget

        for covered, digest, known in self._known.get((owner, conversation_id), ()):
            if covered < len(history) and _digest(history[:covered]) == digest and enough(known, covered):
                return sent(known, covered, [], remember=False)
        try:
            path, summaries = await self.s.db(read_path, owner=owner, conversation_id=conversation_id, upto=upto)
        except Exception as e:  # noqa: BLE001 - a summary is an extra: any failure here means plain trimming
            log.info("no summary for this turn (the stored path could not be read: %s)", e)
            return Prepared(messages, count)
        ids = aligned_ids(history, path)
        by_id: dict[uuid.UUID, stored.ContextSummary] = {}
        for row in summaries:  # newest first: the first one for a message wins
            by_id.setdefault(row.covers_message_id, row)
        best = next((by_id[mid] for i, mid in reversed(list(enumerate(ids)))
                     if mid in by_id and by_id[mid].covered == i + 1), None)
        start = best.covered if best else 0
        if best and enough(best.content, start):
            return sent(best.content, start, [])
        cut = self._cut(history, costs, budget, len(ids))
        if cut <= start:
            return sent(best.content, start, []) if best else Prepared(messages, count)
        key = (conversation_id, ids[cut - 1])
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(self._summarise(owner, conversation_id, ids[cut - 1], cut,
                                                         transcript(best.content if best else "", history[start:cut]),
                                                         provider, info))
            self._running[key] = task
            task.add_done_callback(lambda _t: self._running.pop(key, None))
        why = ""
        try:
            text = await asyncio.wait_for(asyncio.shield(task), cfg.timeout)
        except TimeoutError:
            text, why = None, f"it took longer than {cfg.timeout:g} s; it is kept for the next message when it ends"
        if text:
            return sent(text, cut, [])
        failed = NOTE_FAILED.format(why=why or "the summary model did not answer")
        return sent(best.content, start, [failed]) if best else Prepared(messages, count, [failed])

    def _remember(self, owner: str, conversation_id: str, history: Sequence[Message], covered: int, text: str) -> None:
        key = (owner, conversation_id)
        entry = (covered, _digest(history[:covered]), text)
        known = [k for k in self._known.get(key, ()) if k[0] != covered][-2:]  # a few per conversation (branches)
        self._known[key] = [*known, entry]
        self._known.move_to_end(key)
        while len(self._known) > KNOWN_CONVERSATIONS:
            self._known.popitem(last=False)

    def _cut(self, history: Sequence[Message], costs: Sequence[int], budget: int, aligned: int) -> int:
        """How many of the oldest messages a new summary covers: all but the newest that fit half the budget and
        half the message limit (so the next few turns reuse it), ending before a user message."""
        keep_at_most = max(2, self.settings.after_messages // 2)
        kept, used = 0, 0
        for cost in reversed(costs):
            if kept >= keep_at_most or (kept and used + cost > budget // 2):
                break
            kept, used = kept + 1, used + cost
        cut = min(len(history) - kept, aligned)  # kept >= 1: history[cut] exists
        while cut > 0 and history[cut].role != "user":
            cut -= 1  # the newest part starts with a user message (back: within the stored prefix)
        return cut

    async def _summarise(self, owner: str, conversation_id: str, covers: uuid.UUID, covered: int, text: str,
                         provider: Provider, info: ModelInfo) -> str | None:
        """One summary call (bounded by BACKGROUND_LIMIT); stored on success. None when it failed, whatever failed:
        the turn waiting for it (or nobody, in the background) must never get an exception from it."""
        try:
            return await self._call(owner, conversation_id, covers, covered, text, provider, info)
        except Exception:
            log.exception("summary of conversation %s failed unexpectedly", conversation_id)
            return None

    async def _call(self, owner: str, conversation_id: str, covers: uuid.UUID, covered: int, text: str,
                    provider: Provider, info: ModelInfo) -> str | None:
        cfg = self.settings
        try:
            if cfg.model:
                provider, info = self.s.registry.resolve(cfg.model)
        except ChatError as e:
            log.warning("SUMMARY_MODEL %r cannot be used (%s): no summary", cfg.model, e.kind)
            return None
        window = info.context_window or DEFAULT_CONTEXT_WINDOW
        room = max(1000, context_budget(window, cfg.max_tokens) - 500) * 3  # characters: ~3 a token, on the safe side
        if len(text) > room:
            text = "[the oldest part is left out]\n\n" + text[-room:]
        policy = TurnPolicy(first_token_timeout=self.s.policy.first_token_timeout, idle_timeout=self.s.policy.idle_timeout)
        turn = Turn(provider, info, [Message(role="system", content=INSTRUCTION), Message(role="user", content=text)],
                    Params(max_tokens=cfg.max_tokens), policy=policy)
        try:
            async with asyncio.timeout(BACKGROUND_LIMIT):
                r = await turn.run()
        except TimeoutError:
            log.warning("summary by %s took over %g s: abandoned", info.ref, BACKGROUND_LIMIT)
            return None
        turn_log.info(json.dumps({"event": "summary", "owner": owner, "conversation": conversation_id, "model": info.ref,
                                  "outcome": r.finish_reason.value if r.finish_reason else None,
                                  "error_kind": r.error.kind if r.error else None, "covered": covered,
                                  "input_tokens": r.input_tokens, "output_tokens": r.output_tokens}))
        summary = r.text.strip()
        if r.error is not None or not summary:
            return None
        try:
            await self.s.db(stored.add_summary, owner=owner, covers_message_id=covers, covered=covered, content=summary,
                            provider=info.provider, model=info.id, input_tokens=r.input_tokens,
                            output_tokens=r.output_tokens)
        except StorageError as e:  # still used for this turn; the next one summarises again
            log.warning("could not store a summary: %s", e)
        return summary
