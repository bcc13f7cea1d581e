"""The chat handler: reads the chat's inputs, runs core.chat's turn use case, and draws its events as bubbles."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import gradio as gr

from core.chat import ChatEvent, ChatTurns, Flagged, Refused, Update
from core.identity import owner_for
from core.params import ParamInputs
from core.pending_writes import PendingWrites
from core.services import Services
from core.usage import usage_columns, usage_of
from ui.convert import (
    FLAGGED_MARK,
    NOTICE_PREFIX,
    REFUSED_MARK,
    content_text,
    history_has_files,
    message_files,
    refusal_notice,
    result_bubbles,
    to_messages,
    user_texts,
)
from ui.files import in_upload_folder
from ui.notices import notice_title

# Compare imports these from here (they moved to core with the turn).
__all__ = ["NOT_SENT", "ChatHandler", "notice", "refused"]

#: Said after every refusal: the message went nowhere, and how to get its text back to edit.
NOT_SENT = "Your message was not sent or saved: press ↶ Undo to get it back in the box (or ✎ to edit it)."


def notice(text: str) -> list[gr.ChatMessage]:
    """A single notice bubble (no provider was called)."""
    return [gr.ChatMessage(role="assistant", content=text, metadata={"title": NOTICE_PREFIX + notice_title(text), "status": "done"})]


def refused(text: str) -> list[gr.ChatMessage]:
    """The notice for a refused message, marked so the message is never sent as context nor compared with the store."""
    return [refusal_notice(f"{text} {NOT_SENT}", REFUSED_MARK, title=text)]


def bubbles(event: ChatEvent) -> list[gr.ChatMessage]:
    """The assistant bubbles that show one event of a turn."""
    if isinstance(event, Refused):
        return refused(event.message)
    if isinstance(event, Flagged):
        # Marked: the flagged message is stored, but it must never reach a model as context either.
        return [refusal_notice(event.reply, FLAGGED_MARK), *(notice(n)[0] for n in event.notes)]
    return result_bubbles(event.result, event.label, notes=event.notes, card=event.card)


class ChatHandler:
    def __init__(self, services: Services):
        self.s = services
        self.turns = ChatTurns(services)

    @property
    def pending(self) -> PendingWrites:
        """Turns the database could not take (kept by the use case)."""
        return self.turns.pending

    async def settled(self, owner: str, timeout: float = 10.0) -> str | None:
        """Wait until this owner's streaming replies are saved (after Stop); the conversation id of one."""
        return await self.turns.settled(owner, timeout)

    async def respond(
        self,
        message: Any,
        history: list[Any],
        model: str,
        system_prompt: str = "",
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        effort: str | None = "default",
        api_key: str = "",
        tools: bool = False,
        conversation_id: str | None = None,
        owner_state: str | None = None,
        request: gr.Request = None,  # type: ignore[assignment]  # Gradio fills it in; None only from direct calls
        profile: gr.OAuthProfile | None = None,
    ) -> AsyncIterator[tuple[list[gr.ChatMessage], str | None]]:
        """Stream one reply into the chat and save the turn."""
        owner = owner_for(request, profile, owner_state)
        files = message_files(message)
        # Gradio checks a file value with its type mark is an upload; one without the mark is not
        # checked at all, and must not read a file of the server's.
        if any(not in_upload_folder(f) for f in files):
            yield refused("A file of this message is not an upload; attach it again."), conversation_id
            return
        events = self.turns.send(
            owner=owner,
            identity=self.s.limiter.identity(request, owner),
            text=content_text(message),
            context=to_messages(history),
            shown=user_texts(history),
            model=model,
            system_prompt=system_prompt,
            params=ParamInputs(temperature, top_p, max_tokens, seed, effort),
            api_key=api_key,
            tools=tools,
            conversation_id=conversation_id,
            files=files,
            history_files=history_has_files(history),
        )
        # Closed on Stop too: the use case saves the reply so far in its `finally`.
        async with aclosing(events):
            async for event in events:
                yield bubbles(event), event.conversation_id

    async def api_send(
        self,
        message: str | dict[str, Any],
        model: str = "",
        system_prompt: str = "",
        conversation_id: str = "",
        parent_id: str = "",
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        effort: str | None = "default",
        api_key: str = "",
        tools: bool = False,
        request: gr.Request = None,  # type: ignore[assignment]  # Gradio fills it in; the default keeps it out of the API's inputs
        profile: gr.OAuthProfile | None = None,
    ) -> dict[str, Any]:
        """One chat turn placed in a conversation's tree; returns the reply and the ids to continue, retry or branch from.

        No `conversation_id`: a new conversation. A `conversation_id` and no `parent_id`: the next turn
        after its current leaf. `parent_id` a reply's id: a new message under that reply (a branch, or an
        Edit of the message that followed it); a user message's id: a new reply to it (a retry: `message`
        empty or that message's text; nothing else is stored); "root": a new first message. The model is
        sent the stored path down to there. Returns reply, reasoning, conversation_id, user_message_id
        (the message the reply answers: the new one, or the retried one), reply_id, retry, model,
        finish_reason, error, flagged, notes and the usage figures (null ids: the turn could not be
        saved, notes say why). A refused message raises an error saying why, with nothing sent or saved.
        """
        owner = owner_for(request, profile, None)
        files = message_files(message)
        if any(not in_upload_folder(f) for f in files):
            raise gr.Error("A file of this message is not an upload; attach it again.")
        events = self.turns.send(
            owner=owner, identity=self.s.limiter.identity(request, owner), text=content_text(message),
            model=model, system_prompt=system_prompt, params=ParamInputs(temperature, top_p, max_tokens, seed, effort),
            api_key=api_key, tools=bool(tools), conversation_id=(conversation_id or "").strip() or None,
            files=files, parent_id=parent_id or "",
        )
        last: ChatEvent | None = None
        async with aclosing(events):
            async for event in events:
                last = event
        if last is None or isinstance(last, Refused):
            raise gr.Error(last.message if last else "Nothing was sent.")
        saved = last.saved
        # The user message the reply answers: the new one, or for a retry the one answered again.
        answered = None if saved is None else saved.user_message_id or saved.parent_id
        out: dict[str, Any] = {
            "conversation_id": last.conversation_id,
            "user_message_id": str(answered) if answered else None,
            "reply_id": str(saved.assistant_message_id) if saved else None,
            "retry": saved is not None and saved.user_message_id is None,
            "notes": list(last.notes),
        }
        if isinstance(last, Flagged):
            return {"reply": last.reply, "reasoning": "", "model": None, "finish_reason": "content_filter", "error": None,
                    "flagged": True, **out}
        assert isinstance(last, Update)  # noqa: S101  (the only event left)
        r = last.result
        return {"reply": r.text, "reasoning": r.reasoning, "model": r.ref,
                "finish_reason": r.finish_reason.value if r.finish_reason else None,
                "error": r.error.message if r.error else None, "flagged": False, **out, **usage_columns(usage_of(r))}
