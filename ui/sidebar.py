"""Sidebar handlers: identity on load, the model picker, and the saved conversations."""

from __future__ import annotations

import asyncio
import html
import logging
from collections import OrderedDict
from typing import Any

import gradio as gr

from chat.errors import ChatError
from chat.types import PARAM_NAMES, ModelInfo
from core.config import EPHEMERAL_NOTICE, new_browser_id
from core.conversations import ConversationError, Conversations, Entry, Feedback, Opened
from core.identity import display_name, owner_for, valid_browser_id
from core.services import Services
from ui.branches import map_for
from ui.convert import content_text, stored_to_chatbot, user_texts, user_turns
from ui.exports import exports_for
from ui.files import shown_files

log = logging.getLogger("parley.sidebar")

#: Seconds between a stopped reply being saved and the chat redrawn from the store (see show_stopped).
STOPPED_REDRAW_DELAY = 0.3
#: How many outputs opening a conversation sets (SidebarHandlers.opened_values).
OPENED_VALUES = 11
#: Pages whose count of opens is kept (for Stop's redraw: see SidebarHandlers.changed); the oldest go first.
PAGES = 50_000

def files_read(info: ModelInfo) -> str:
    """What a model does with attachments, said before anything is sent (core refuses what it cannot read)."""
    if info.vision and info.pdf:
        return "📎 reads images, PDFs and text files"
    if info.vision:
        return "📎 reads images and text files; PDFs go as their text"
    if info.pdf:
        return "📎 reads PDFs and text files, no images"
    return "📎 text files only: no images; PDFs go as their text"


class SidebarHandlers:
    def __init__(self, services: Services):
        self.s = services
        # Made at start-up, so that exports an earlier process left behind are swept now.
        self.exports = exports_for(services)
        self.conversations = Conversations(services, self.exports)
        self._changes: OrderedDict[str, int] = OrderedDict()

    def changed(self, request: gr.Request | None) -> None:
        """Note that this page opened another conversation (open, new chat, delete, a version forked off)."""
        page = getattr(request, "session_hash", None)
        if page:
            self._changes[page] = self._changes.pop(page, 0) + 1
            while len(self._changes) > PAGES:
                self._changes.popitem(last=False)

    def changes(self, request: gr.Request | None) -> int:
        return self._changes.get(getattr(request, "session_hash", None) or "", 0)

    # -- identity --------------------------------------------------------------------------

    async def on_load(self, browser_id: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None) -> tuple[Any, ...]:
        """Give this browser a lasting random id (unless a login names the user), greet, and list
        the conversations, all in one event so that no later refresh can be overtaken by it."""
        if not valid_browser_id(browser_id):
            browser_id = new_browser_id()
        owner = owner_for(request, profile, browser_id)
        who = display_name(owner)
        if who == "this browser":
            greeting = "Chats are saved on the server for **this browser**."
        else:
            greeting = f"Signed in as **{html.escape(who)}**."
        if self.s.config.ephemeral_storage:
            greeting += f"\n\n⚠️ Chats are not kept for good: {EPHEMERAL_NOTICE}"
        conv_list, hits = await self.list_choices(owner, request)
        return owner, browser_id, greeting, conv_list, hits

    async def reopen(self, owner: str, request: gr.Request) -> tuple[Any, ...]:
        """After on_load: reopen the conversation the page's address names (`?c=<id>`: a reload, a bookmark),
        with its model and settings, if it is this owner's; otherwise say so and open nothing.

        Outputs: what opening a conversation sets (see `opened_values`), then the id for the address bar
        ("" drops a link that opened nothing from the address).
        """
        owner = owner_for(request, None, owner)
        link = request.query_params.get("c") if request is not None else None
        if not link:
            return (*(gr.skip(),) * OPENED_VALUES, "")
        try:
            c = await self.conversations.open_link(owner, link)
        except ConversationError as e:
            gr.Warning(e.message)
            return (*(gr.skip(),) * OPENED_VALUES, "")
        return (*await self.opened_values(owner, c), c.id)

    # -- models ----------------------------------------------------------------------------

    def model_choices(self, models: dict[str, list[ModelInfo]]) -> list[tuple[str, str]]:
        choices: list[tuple[str, str]] = []
        reg = self.s.registry
        for name, infos in models.items():
            label = reg.providers[name].label if name in reg.providers else name
            for m in infos:
                # The demo's own label already says what it is.
                choices.append((m.display if m.demo else f"{label} · {m.display}", m.ref))
        return choices

    async def refresh_models(self, current: str) -> Any:
        """Live model lists (cached by the registry). Only the choices change: the value may have
        been typed meanwhile, and a typed model is allowed."""
        await asyncio.get_running_loop().run_in_executor(None, self.s.warmed.wait, 15)
        models = await self.s.registry.list_models()
        choices = self.model_choices(models)
        if current and current not in {v for _, v in choices}:
            choices.insert(0, (current, current))
        return gr.update(choices=choices)

    def providers_markdown(self) -> str:
        missing = self.s.registry.unconfigured()
        if not missing:
            return ""
        lines = [f"- **{html.escape(label)}**: {html.escape(reason)}" for _name, label, reason in missing]
        return "Not configured (add to `.env`):\n" + "\n".join(lines)

    def on_model_change(self, model: str) -> tuple[Any, ...]:
        """Show only the parameters the chosen model accepts, and what it is."""
        try:
            provider, info = self.s.registry.resolve(model)
        except ChatError as e:
            return (f"⚠️ {html.escape(e.message)}", *[gr.update(visible=False) for _ in PARAM_NAMES], gr.update(visible=False))
        accepted = info.params or provider.accepts
        bits = [f"**{html.escape(provider.label)}** · `{html.escape(info.id)}`"]
        if info.demo:
            bits.append("offline demo: no key needed, replies are canned")
        if info.context_window:
            bits.append(f"{info.context_window:,} tokens context")
        bits.append(files_read(info))
        tools_ok = info.supports_tools and self.s.toolbox is not None
        return (" · ".join(bits), *[gr.update(visible=name in accepted) for name in PARAM_NAMES], gr.update(visible=tools_ok))

    # -- conversations ---------------------------------------------------------------------

    async def list_choices(self, owner: str, request: gr.Request, query: str = "") -> tuple[Any, Any]:
        """The conversation list (or search results) for this owner."""
        owner = owner_for(request, None, owner)
        try:
            listing = await self.conversations.listing(owner, query)
        except ConversationError as e:
            return gr.update(), gr.update(value=f"<div class='hit'>⚠️ {html.escape(e.message)}</div>", visible=True)
        if not listing.query:
            choices = [(("📌 " if c.pinned else "") + c.title, c.id) for c in listing.entries]
            return gr.update(choices=choices), gr.update(value="", visible=False)
        snippets = [f"<div class='hit'><b>{html.escape(h.title)}</b><br>{h.snippet}</div>" for h in listing.hits[:10]]
        info = "".join(snippets) if snippets else f"<div class='hit'>No messages match “{html.escape(listing.query)}”.</div>"
        # The value stays: the open conversation stays highlighted when it is among the results, and again
        # when the full list comes back.
        return gr.update(choices=[(c.title, c.id) for c in listing.entries]), gr.update(value=info, visible=True)

    async def open_conversation(self, conversation_id: str | None, owner: str, request: gr.Request) -> tuple[Any, ...]:
        """Load a saved conversation into the chat, with its model, system prompt and parameters."""
        owner = owner_for(request, None, owner)
        if not conversation_id:
            return (gr.skip(),) * OPENED_VALUES
        self.changed(request)
        try:
            c = await self.conversations.open(owner, conversation_id)
        except ConversationError as e:
            gr.Warning(e.message)
            return (gr.skip(),) * OPENED_VALUES
        return await self.opened_values(owner, c)

    async def chat_value(self, owner: str, c: Opened) -> list[dict[str, Any]]:
        """The chat's value showing `c`'s current path."""
        return stored_to_chatbot(c.messages, self._label_for, await shown_files(self.s, owner, c.messages))

    async def opened_values(self, owner: str, c: Opened) -> tuple[Any, ...]:
        """What opening `c` sets: the chat, the conversation id, the model, system prompt, the five
        parameters, the Title field and the versions map (ui/branches.py) (OPENED_VALUES values)."""
        value = await self.chat_value(owner, c)
        return (
            value,
            c.id,
            c.model or gr.skip(),
            c.system_prompt,
            c.temperature,
            c.top_p,
            c.max_tokens,
            c.seed,
            c.effort,
            gr.update(value=c.title),
            map_for(value, c),
        )

    async def focus_list(self, owner: str, conversation_id: str | None) -> tuple[Any, Any, Entry | None]:
        """The full list with the open conversation highlighted (added when it is not on the first page),
        the search hits hidden, and the open conversation's entry (None when none is open or it is gone)."""
        try:
            focus = await self.conversations.focus(owner, conversation_id)
        except ConversationError as e:
            return gr.update(), gr.update(value=f"<div class='hit'>⚠️ {html.escape(e.message)}</div>", visible=True), None
        choices = [(("📌 " if e.pinned else "") + e.title, e.id) for e in focus.entries]
        value = focus.open.id if focus.open else None
        return gr.update(choices=choices, value=value), gr.update(value="", visible=False), focus.open

    async def focus(self, conversation_id: str | None, owner: str, request: gr.Request) -> tuple[Any, ...]:
        """Whenever the open conversation changes (a new chat saved, Edit of the first message, open, delete,
        a reload): the list highlights it, the Title field names it, and the address bar holds its id.

        The list, the Title field and Manage's actions all go by the open conversation (the server-side
        State), so what is highlighted is always what they act on.
        """
        owner = owner_for(request, None, owner)
        listed, hits, entry = await self.focus_list(owner, conversation_id)
        if entry is None:
            return listed, hits, gr.update(value=""), ""
        return listed, hits, gr.update(value=entry.title), entry.id

    async def show_stopped(self, chat: Any, conversation_id: str | None, owner: str | None, request: gr.Request) -> tuple[Any, ...]:
        """After Stop: the conversation as saved, so the stopped reply shows its note and metrics at once
        (Gradio cancels the stream before its last update).

        Waits until the reply is saved, then a moment more: Gradio ends the cancelled stream with its
        last value, and this must reach the page after that, not before. When the page opened another
        conversation meanwhile (a click right after Stop), nothing is redrawn: the stopped one is saved, and
        showing it would take the user back to it.
        """
        owner = owner_for(request, None, owner)
        changes = self.changes(request)
        conversation_id = await chat.settled(owner) or conversation_id
        if not conversation_id:
            return (gr.skip(),) * 4
        await asyncio.sleep(STOPPED_REDRAW_DELAY)
        try:
            c = await self.conversations.open(owner, conversation_id)
        except ConversationError:
            return (gr.skip(),) * 4  # the partial text stays on screen; it is saved or it was never shown
        value = stored_to_chatbot(c.messages, self._label_for, await shown_files(self.s, owner, c.messages))
        if self.changes(request) != changes:
            return (gr.skip(),) * 4  # another conversation was opened meanwhile: the redraw would hide it
        return value, value, value, c.id

    def _label_for(self, provider: str | None, model: str | None) -> str:
        if not provider:
            return "assistant"
        try:
            p, info = self.s.registry.resolve(f"{provider}:{model}")
            return f"{p.label} · {info.display}"
        except ChatError:
            return f"{provider}:{model}"

    def new_chat(self, request: gr.Request) -> tuple[Any, ...]:
        self.changed(request)
        return [], None, gr.update(value=None), gr.update(value="")

    async def rename(self, conversation_id: str | None, title: str, owner: str, request: gr.Request) -> Any:
        owner = owner_for(request, None, owner)
        try:
            await self.conversations.rename(owner, conversation_id, title)
        except ConversationError as e:
            gr.Warning(e.message)
            return gr.skip()
        gr.Info("Renamed.")
        return (await self.list_choices(owner, request))[0]

    async def toggle_pin(self, conversation_id: str | None, owner: str, request: gr.Request) -> Any:
        owner = owner_for(request, None, owner)
        try:
            await self.conversations.toggle_pin(owner, conversation_id)
        except ConversationError as e:
            gr.Warning(e.message)
            return gr.skip()
        return (await self.list_choices(owner, request))[0]

    async def ask_delete(self, conversation_id: str | None, owner: str, request: gr.Request) -> tuple[Any, Any]:
        """Delete's confirmation, naming the conversation it will delete (the open, highlighted one)."""
        owner = owner_for(request, None, owner)
        try:
            entry = await self.conversations.entry(owner, conversation_id)
        except ConversationError as e:
            gr.Warning(e.message)
            return gr.update(visible=False), ""
        return gr.update(visible=True), f"Delete “{html.escape(entry.title)}”? This cannot be undone."

    async def delete(self, conversation_id: str | None, owner: str, request: gr.Request) -> tuple[Any, ...]:
        owner = owner_for(request, None, owner)
        try:
            await self.conversations.delete(owner, conversation_id)
        except ConversationError as e:
            gr.Warning(e.message)
            return gr.skip(), gr.skip(), gr.skip(), gr.update(visible=False)
        self.changed(request)
        gr.Info("Conversation deleted.")
        return (await self.focus_list(owner, None))[0], [], None, gr.update(visible=False)

    async def export(self, conversation_id: str | None, fmt: str, owner: str, request: gr.Request) -> Any:
        """A JSON or Markdown file of the open conversation, or of all of them when none is open."""
        owner = owner_for(request, None, owner)
        try:
            path = await self.conversations.export(owner, conversation_id, fmt)
        except ConversationError as e:
            gr.Warning(e.message)
            return gr.update(visible=False)
        return gr.update(value=str(path), visible=True)

    async def export_json(self, conversation_id: str | None, owner: str, request: gr.Request) -> Any:
        return await self.export(conversation_id, "json", owner, request)

    async def export_markdown(self, conversation_id: str | None, owner: str, request: gr.Request) -> Any:
        return await self.export(conversation_id, "md", owner, request)

    async def import_file(self, file: Any, owner: str, request: gr.Request) -> Any:
        owner = owner_for(request, None, owner)
        if file is None:
            return gr.skip()
        try:
            created = await self.conversations.import_file(owner, file if isinstance(file, str) else getattr(file, "name", ""))
        except ConversationError as e:
            gr.Warning(e.message)
            return gr.skip()
        gr.Info(f"Imported {len(created)} conversation(s).")
        return (await self.list_choices(owner, request))[0]

    async def undo(self, data: gr.UndoData, history: list[Any], conversation_id: str | None, owner: str, request: gr.Request) -> None:
        """Undo removes the last turn from the store too, so a reload shows what the chat shows."""
        owner = owner_for(request, None, owner)
        # By the undone message's index: the chat may arrive before or after Gradio's own undo popped it,
        # and a refused message (never saved) must not take the stored turn before it along.
        index = data.index if isinstance(data.index, int) else data.index[0]
        try:
            await self.conversations.undo(owner, conversation_id, user_texts(history[:index]), content_text(data.value))
        except ConversationError as e:
            gr.Warning(e.message)

    async def feedback(self, data: gr.LikeData, history: list[Any], conversation_id: str | None, owner: str, request: gr.Request) -> None:
        """Save a like / dislike on the stored reply the bubble belongs to."""
        owner = owner_for(request, None, owner)
        if not conversation_id:
            return
        index = data.index if isinstance(data.index, int) else data.index[0]
        turn_number = user_turns(history[: index + 1])  # the reply answers the n-th user message
        value: Feedback | None = None if data.liked is None else ("like" if data.liked else "dislike")
        try:
            await self.conversations.feedback(owner, conversation_id, turn_number, value)
        except ConversationError as e:
            gr.Warning(e.message)
