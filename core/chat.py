"""Send a chat turn: the use case under the chat tab, the `/chat` API and any other surface.

`ChatTurns.send` owns every rule of a turn: the message is cleaned and checked (empty, too long),
the parameters parsed, the model resolved, one call charged to the rate limit, the message
moderated; then the Turn (or ToolLoop) streams while the turn is saved (user message first,
partial text while it streams, the reply in `finally` so Stop and errors keep what was said),
turns the database cannot take are kept for later, and one log line records the turn.

It yields `ChatEvent`s in domain terms (no Gradio): the surface draws them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncGenerator, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from chat import tracing
from chat.context import clean_text
from chat.errors import ChatError
from chat.toolloop import ToolLoop
from chat.tools import ToolContext
from chat.turn import Turn
from chat.types import Attachment, Message, ModelInfo
from core.attachments import FileProblem, history_context, message_files, to_store, with_history
from core.branching import RETRY_TEXT, Place, PlaceProblem, begin_at, place
from core.chat_events import ChatEvent, Flagged, RefusalKind, Refused, Result, Update
from core.moderation import Moderator
from core.params import ParamInputs, params_error
from core.pending_writes import KeptTurn, PendingWrites
from core.ratelimit import Identity
from core.repro import done_card, stored_fields
from core.services import Services
from core.store import FLAGGED_ERROR, start_turn
from core.summaries import LongContext
from core.tooling import owner_search, tool_records
from core.usage import usage_columns, usage_of
from storage import repository as repo
from storage.errors import StorageError, StorageUnavailable
from storage.models import TurnIds

# The events live in core.chat_events; every surface imports them from here.
__all__ = ["DROPPED", "KEPT", "ChatEvent", "ChatTurns", "Flagged", "RefusalKind", "Refused", "Result", "Update",
           "context_messages", "finish_values", "model_label"]

log = logging.getLogger("parley.chat")
turn_log = logging.getLogger("parley.turns")

#: While a reply streams, its text so far is saved this often (seconds), for a server that dies mid-reply.
PARTIAL_SAVE_EVERY = 2.0

KEPT = ("💾 The database is unavailable right now: this turn is kept and will be saved, in this conversation, "
        "when it is back.")
DROPPED = ("💾 {n} earlier turn(s) could not be kept while the database was unavailable (too many were waiting, "
           "or the database refused them): they are not in your saved history.")


def model_label(info: ModelInfo, provider_label: str) -> str:
    """How a reply names its model: "<provider> · <model>", or the offline demo's own label."""
    if info.demo:  # its own label already says what it is ("Parley demo (offline)")
        return info.display if "demo" in info.display.lower() else f"{info.display} (offline demo)"
    return f"{provider_label} · {info.display}"


def finish_values(r: Result, params: dict[str, Any]) -> dict[str, Any]:
    """finish_turn's values for a finished turn (or tool loop): the reply, how it ended, its metrics."""
    return dict(
        content=r.text,
        reasoning=r.reasoning or None,
        provider=r.provider,
        model=r.model,
        model_version=r.model_version,
        params=params,
        **usage_columns(usage_of(r)),
        ttft_ms=round(r.ttft_ms) if r.ttft_ms is not None else None,
        duration_ms=round(r.duration_ms) if r.duration_ms is not None else None,
        finish_reason=(r.finish_reason.value if r.finish_reason else "cancelled"),
        error=r.error.message if r.error else None,
        tool_calls=tool_records(r),
    )


def context_messages(context: Sequence[Message], text: str, system_prompt: str,
                     attachments: Sequence[Attachment] = ()) -> list[Message]:
    """What the model is sent: the system prompt, the chat's context, then the new user message (and its files)."""
    out: list[Message] = []
    system = clean_text(system_prompt or "").strip()
    if system:
        out.append(Message(role="system", content=system))
    out.extend(context)
    if text or attachments:
        out.append(Message(role="user", content=text, attachments=tuple(attachments)))
    return out


@dataclass
class ChatTurns:
    """The chat-turn use case over the app's services; one per process (it keeps the turns waiting for the database)."""

    s: Services
    #: Turns the database could not take, written before the same owner's next turn.
    pending: PendingWrites = field(init=False)
    moderator: Moderator = field(init=False)
    _background: set[asyncio.Task[None]] = field(init=False, default_factory=set)
    #: Each owner's replies streaming now: a future that resolves, with the conversation id, once
    #: the reply is saved (however it ended). Stop waits on it to show the reply as stored.
    _running: dict[str, set[asyncio.Future[str | None]]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.pending = PendingWrites(self.s.db)
        self.moderator = Moderator.of(self.s)
        self.long = LongContext(self.s, self.s.config.summaries)

    async def settled(self, owner: str, timeout: float = 10.0) -> str | None:
        """Wait until this owner's streaming replies are saved (after Stop); the conversation id of one."""
        running = list(self._running.get(owner, ()))
        if not running:
            return None
        done, _ = await asyncio.wait(running, timeout=timeout)
        # A reply kept during an outage is written now if the database is back, so the redraw shows it.
        await self.pending.flush(owner)
        return next((f.result() for f in done if not f.cancelled() and f.result()), None)

    async def send(
        self,
        *,
        owner: str,
        identity: Identity,
        text: str,
        context: Sequence[Message] = (),
        shown: Sequence[str] = (),
        model: str = "",
        system_prompt: str = "",
        params: ParamInputs = ParamInputs(),  # noqa: B008  (frozen: one shared default is safe)
        api_key: str = "",
        tools: bool = False,
        conversation_id: str | None = None,
        files: Sequence[str | os.PathLike[str]] = (),
        history_files: bool = False,
        parent_id: str | None = None,
    ) -> AsyncGenerator[ChatEvent, None]:
        """Run one chat turn and save it, yielding what happens.

        `identity` is who the rate limit charges; `context` the chat's messages that may be sent (refused
        turns and display-only bubbles already left out); `shown` the stored user texts the chat shows,
        which the store is made to agree with before the turn is saved. `files` are the paths of the new
        message's uploads; `history_files` says that earlier user messages of the chat had files, which
        are then loaded from the store and sent with them (only then: a plain chat makes no extra query).
        With `parent_id` (the API's `/send`; "" = the current leaf) the turn goes where it says in the tree
        of `conversation_id` instead (core.branching), and the model is sent the stored path above it:
        `context` and `shown` are not used.
        """
        text = clean_text(text)
        cfg = self.s.config
        files = list(files or ())
        # Every refusal below leaves no trace: the refused text is never saved, never sent later as
        # context, and (the surface marks it) left out of the next turn's comparison with the store.
        if len(text) > cfg.max_message_chars:
            yield Refused(f"This message is {len(text):,} characters long; the limit is {cfg.max_message_chars:,}. Shorten it and send again.",
                          "too_long", conversation_id)
            return
        at: Place | None = None
        if parent_id is not None:
            try:
                at = await self.s.db(place, owner=owner, conversation_id=conversation_id, parent_id=parent_id, text=text)
            except (PlaceProblem, StorageError) as e:
                yield Refused(e.message, "place", conversation_id)
                return
            if at.retry_of is not None and files:
                yield Refused(RETRY_TEXT, "place", conversation_id)
                return
            # A retry's prompt is the stored message, already last in the context.
            conversation_id, context, shown = at.conversation_id, at.context, ()
            text = "" if at.retry_of is not None else text
        if not text.strip() and not files and (at is None or at.retry_of is None):
            yield Refused("Type a message first: an empty message is not sent.", "empty", conversation_id)
            return
        try:
            parsed = params.parse()
        except (ValidationError, ValueError, TypeError) as e:
            yield Refused(params_error(e) if isinstance(e, ValidationError) else f"Invalid parameters: {e}.", "params", conversation_id)
            return
        try:
            provider, info = self.s.registry.resolve_with_key(model or self.s.registry.default_model, api_key)
        except ChatError as e:
            yield Refused(e.message, "model", conversation_id)
            return
        attachments: list[Attachment] = []
        notes: list[str] = []
        if files:  # read and checked in a worker thread; a text-only turn never gets here
            try:
                attachments, notes = await message_files(self.s, info, files)
            except FileProblem as e:
                yield Refused(e.message, "file", conversation_id)
                return
        if at is not None and at.files:
            context, left_out = with_history(context, at.files, info)
            notes += left_out
        elif history_files and conversation_id and shown:
            context, left_out = await history_context(self.s, owner, conversation_id, list(shown), context, info)
            notes += left_out
        # One turn is one call: a tool loop's steps (at most 5) are part of the turn it answers.
        verdict = await self.s.limiter.charge(identity, calls=1)
        if not verdict.allowed:
            yield Refused(verdict.message, "rate_limited", conversation_id)
            return

        flagged = await self._moderate(at.retry_text if at is not None and at.retry_of is not None else text)
        if flagged is not None:
            yield await self._refuse(owner, conversation_id, list(shown), text, info, flagged, attachments, at)
            return

        system_prompt = clean_text(system_prompt or "")
        messages = context_messages(context, text, system_prompt, attachments)
        # Long conversations (core.summaries): older messages summarised, the budget in the model's tokens.
        ready = await self.long.prepare(owner=owner, conversation_id=conversation_id, messages=messages, info=info,
                                        provider=provider, params=parsed, upto=(at.retry_of or at.parent_id) if at else None)
        messages, notes = ready.messages, notes + ready.notes
        label = model_label(info, provider.label)
        sent = parsed.for_provider(info.params or provider.accepts)

        turn: Turn | ToolLoop
        toolbox = self.s.toolbox
        if tools and toolbox is not None and info.supports_tools:
            notes = notes + toolbox.notices()  # an MCP server that is down is said with the reply (chat/tools/mcp.py)
            turn = ToolLoop(provider, info, messages, parsed, tools=toolbox,
                            context=ToolContext(owner=owner, search=owner_search(self.s)), policy=self.s.policy,
                            count=ready.count)
        else:
            turn = Turn(provider, info, messages, parsed, policy=self.s.policy, count=ready.count)
        span = tracing.start(turn)  # None unless OTEL_EXPORTER_OTLP_ENDPOINT is set
        # The user message is saved while the provider call starts: both are on the first-token path.
        shown = list(shown)
        begin: dict[str, Any] = dict(provider=info.provider, model=info.id, system_prompt=system_prompt, params=sent)
        if attachments:
            begin["attachments"] = [to_store(a) for a in attachments]
        save_task = asyncio.ensure_future(self._begin(owner, conversation_id, shown, text, begin, at))
        ids: TurnIds | None | bool = None
        conv = conversation_id
        yielded_conv = conversation_id
        yielded_ids: TurnIds | None = None
        finished = False
        self.s.active_streams += 1
        loop = asyncio.get_running_loop()
        saved_turn: asyncio.Future[str | None] = loop.create_future()
        self._running.setdefault(owner, set()).add(saved_turn)
        partial_due = loop.time() + PARTIAL_SAVE_EVERY
        updates: AsyncGenerator[Result, None] = turn.updates(self.s.update_interval)
        guard = self.moderator.guard()  # MODERATION=openai: the reply is checked as it streams (core.moderation)
        if guard is not None:
            updates = guard.watch(updates)
        try:
            async for r in updates:
                if ids is None and save_task.done():
                    ids, conv = self._ids(save_task.result(), conversation_id, notes)
                if isinstance(ids, TurnIds) and loop.time() >= partial_due:
                    # Off the stream's path: the stream never waits for the database.
                    partial_due = loop.time() + PARTIAL_SAVE_EVERY
                    self._spawn(self._save_partial(owner, ids, r.text, r.reasoning))
                saved_ids = ids if isinstance(ids, TurnIds) else None
                yield Update(r, label, tuple(notes), conv, saved_ids, done_card(provider, info, r, sent, system_prompt))
                yielded_conv, yielded_ids = conv, saved_ids
            finished = True
        finally:
            self.s.active_streams -= 1
            tracing.end(span)
            try:
                if guard is not None:  # a stopped or failed reply's text is checked too, before it is stored
                    await asyncio.shield(guard.settle(turn.result))
                begun = await asyncio.shield(save_task)
                if ids is None:
                    ids, conv = self._ids(begun, conversation_id, notes)
                kept = KeptTurn(owner=owner, conversation_id=conversation_id, shown=tuple(shown), content=text,
                                begin=begin, finish={**finish_values(turn.result, sent),
                                                     **stored_fields(provider, turn.result, system_prompt)})
                saved = await asyncio.shield(self._settle(kept, begun, notes))
                self._log_turn(owner, conv, turn.result, saved, text, len(attachments))
                self.long.learn(conv, info, turn)
            finally:
                if not saved_turn.done():
                    saved_turn.set_result(conv)
                waiting = self._running.get(owner)
                if waiting is not None:
                    waiting.discard(saved_turn)
                    if not waiting:
                        del self._running[owner]
        # A fast reply can end before the user message is saved: the chat must still learn the
        # conversation id (and any note), or the next message would start a new conversation; an API
        # client learns the saved ids (what it branches from).
        saved_ids = ids if isinstance(ids, TurnIds) else None
        if finished and guard is not None and guard.flagged:  # the reply is withheld: the notice replaces it
            yield Flagged(guard.notice, guard.flagged, tuple(notes), conv, saved_ids)
            return
        if finished and (notes or conv != yielded_conv or saved_ids != yielded_ids):
            yield Update(turn.result, label, tuple(notes), conv, saved_ids, done_card(provider, info, turn.result, sent, system_prompt))

    # -- moderation -----------------------------------------------------------------------

    async def _moderate(self, text: str) -> list[str] | None:
        """With MODERATION=openai: the categories a message is flagged for, or None when it may pass."""
        found = await self.moderator.check(text)
        return list(found) if found else None

    async def _refuse(self, owner: str, conversation_id: str | None, shown: list[str], text: str,
                      info: ModelInfo, categories: list[str], attachments: Sequence[Attachment] = (),
                      at: Place | None = None) -> Flagged:
        """A polite refusal; the message is stored, flagged (with its files), with no provider call."""
        named = sorted(set(categories))
        reply = f"I can't help with that message: it was flagged by the moderation check ({', '.join(named)}). Please rephrase it."
        begin: dict[str, Any] = dict(provider=info.provider, model=info.id, system_prompt="", params={})
        if attachments:
            begin["attachments"] = [to_store(a) for a in attachments]
        begun = await self._begin(owner, conversation_id, shown, text, begin, at)
        kept = KeptTurn(owner=owner, conversation_id=conversation_id, shown=tuple(shown), content=text, begin=begin,
                        finish=dict(content=reply, provider=info.provider, model=info.id, finish_reason="content_filter",
                                    error=f"{FLAGGED_ERROR}: " + ", ".join(named)))
        notes: list[str] = []
        await self._settle(kept, begun, notes)
        if isinstance(begun, StorageError):
            return Flagged(reply, tuple(named), tuple(notes), conversation_id)
        return Flagged(reply, tuple(named), tuple(notes), str(begun.conversation_id), begun)

    # -- storage --------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)  # keep a reference until it is done
        task.add_done_callback(self._background.discard)

    async def _save_partial(self, owner: str, ids: TurnIds, text: str, reasoning: str) -> None:
        """Keep the reply so far: if the server dies now, the user finds it, marked interrupted."""
        try:
            await self.s.db(repo.save_partial, owner=owner, message_id=ids.assistant_message_id,
                            content=text, reasoning=reasoning or None)
        except StorageError as e:
            log.info("could not save a partial reply: %s", e)

    async def _begin(self, owner: str, conversation_id: str | None, shown: list[str], text: str,
                     begin: dict[str, Any], at: Place | None = None) -> TurnIds | StorageError:
        """Save the user message (creating the conversation if needed) and a pending reply; the ids or the StorageError.

        Turns kept during a database outage are written first, so this one follows them in the same
        conversation; while any of them still waits, this one waits behind it (order is kept). A turn
        placed by `at` is not kept through an outage (the kept turns are placed by what a chat shows).
        """
        try:
            if not await self.pending.flush(owner):
                return StorageUnavailable("Earlier turns are still waiting for the database.")
            if at is not None:
                try:
                    return await self.s.db(begin_at, owner=owner, at=at, content=text, **begin)
                except StorageUnavailable as e:
                    return StorageError(e.message)
            # A chat that began during the outage has no id yet: continue the conversation its turns made.
            conversation_id = conversation_id or self.pending.conversation_for(owner, shown)
            return await self.s.db(start_turn, owner=owner, conversation_id=conversation_id,
                                   history_user_texts=shown, content=text, **begin)
        except StorageError as e:
            return e

    def _ids(self, value: TurnIds | StorageError, conversation_id: str | None, notes: list[str]) -> tuple[TurnIds | bool, str | None]:
        """The saved turn's ids and conversation, or (False, unchanged id) with a note when saving failed."""
        if isinstance(value, StorageError):
            # An outage keeps the turn (see _settle); any other refusal cannot be retried.
            msg = KEPT if isinstance(value, StorageUnavailable) else f"💾 This turn could not be saved: {value.message}"
            if msg not in notes:
                notes.append(msg)
            return False, conversation_id
        return value, str(value.conversation_id)

    async def _settle(self, kept: KeptTurn, begun: TurnIds | StorageError, notes: list[str]) -> bool:
        """Write the reply; if the database is down, keep the turn to write later. True when it is stored now."""
        dropped = self.pending.take_dropped(kept.owner)
        if dropped:
            notes.append(DROPPED.format(n=dropped))
        if isinstance(begun, StorageError):
            if isinstance(begun, StorageUnavailable):
                self.pending.keep(kept)
            return False
        try:
            await self.s.db(repo.finish_turn, owner=kept.owner, message_id=begun.assistant_message_id, **kept.finish)
            return True
        except StorageUnavailable as e:
            log.warning("could not save the reply of %s, kept to write later: %s", kept.owner, e)
            kept.message_id, kept.conversation_id = str(begun.assistant_message_id), str(begun.conversation_id)
            self.pending.keep(kept)
            msg = KEPT
        except StorageError as e:  # refused, not unavailable: writing it again would fail again
            log.warning("could not save the reply of %s: %s", kept.owner, e)
            msg = f"💾 This reply could not be saved: {e.message}"
        if msg not in notes:
            notes.append(msg)
        return False

    def _log_turn(self, owner: str, conversation_id: str | None, r: Result, saved: bool, text: str, files: int = 0) -> None:
        """One structured line per turn; message content only when LOG_CONTENT asks for it."""
        record: dict[str, Any] = {
            "event": "turn",
            "owner": owner,
            "conversation": conversation_id,
            "model": r.ref,
            "outcome": r.finish_reason.value if r.finish_reason else None,
            "error_kind": r.error.kind if r.error else None,
            "attempts": getattr(r, "attempts", None) or sum(getattr(x, "attempts", 0) for x in getattr(r, "steps", ())),
            "tool_calls": len(getattr(r, "tools", ())),
            "files": files,
            "ttft_ms": round(r.ttft_ms, 1) if r.ttft_ms is not None else None,
            "duration_ms": round(r.duration_ms, 1) if r.duration_ms is not None else None,
            "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens,
            "saved": saved,
        }
        if self.s.config.log_content:
            record["prompt"] = text
            record["reply"] = r.text
        turn_log.info(json.dumps(record))
