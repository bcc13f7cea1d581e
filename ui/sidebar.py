"""Sidebar handlers: identity on load, the model picker, and the saved conversations."""

from __future__ import annotations

import asyncio
import html
import logging
import re
from pathlib import Path
from typing import Any

import gradio as gr

from chat.context import clean_text
from chat.errors import ChatError
from chat.types import PARAM_NAMES, ModelInfo, Params
from core.config import new_browser_id
from core.identity import display_name, owner_for, valid_browser_id
from core.services import Services
from core.store import undo_turn
from storage import repository as repo
from storage.errors import NotFound, StorageError
from ui.convert import content_text, stored_to_chatbot, user_texts, user_turns
from ui.exports import exports_for

log = logging.getLogger("parley.sidebar")

#: Seconds between a stopped reply being saved and the chat redrawn from the store (see show_stopped).
STOPPED_REDRAW_DELAY = 0.3

PAGE = 50


def _safe_filename(title: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._ -]+", "", title).strip().replace(" ", "-")[:60]
    return name or "conversation"


class SidebarHandlers:
    def __init__(self, services: Services):
        self.s = services
        # Made at start-up, so that exports an earlier process left behind are swept now.
        self.exports = exports_for(services)

    # -- identity --------------------------------------------------------------------------

    async def on_load(self, browser_id: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
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
        conv_list, hits = await self.list_choices(owner, request)
        return owner, browser_id, greeting, conv_list, hits

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

    async def refresh_models(self, current: str):
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

    def on_model_change(self, model: str):
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
        tools_ok = info.supports_tools and self.s.toolbox is not None
        return (" · ".join(bits), *[gr.update(visible=name in accepted) for name in PARAM_NAMES], gr.update(visible=tools_ok))

    # -- conversations ---------------------------------------------------------------------

    async def list_choices(self, owner: str, request: gr.Request, query: str = ""):
        """The conversation list (or search results) for this owner."""
        owner = owner_for(request, None, owner)
        # Cleaned first: a lone surrogate would fail the search and then the event stream that echoes it.
        query = clean_text(query if isinstance(query, str) else "").strip()
        try:
            if query:
                hits = await self.s.db(repo.search_messages, owner=owner, query=query, limit=30)
                seen: dict[str, str] = {}
                snippets: list[str] = []
                for h in hits:
                    cid = str(h.conversation_id)
                    if cid not in seen:
                        seen[cid] = h.title
                    snippets.append(f"<div class='hit'><b>{html.escape(h.title)}</b><br>{h.snippet}</div>")
                choices = [(title, cid) for cid, title in seen.items()]
                info = "".join(snippets[:10]) if snippets else f"<div class='hit'>No messages match “{html.escape(query)}”.</div>"
                return gr.update(choices=choices, value=None), gr.update(value=info, visible=True)
            convs = await self.s.db(repo.list_conversations, owner=owner, limit=PAGE, offset=0)
        except StorageError as e:
            return gr.update(), gr.update(value=f"<div class='hit'>⚠️ {html.escape(e.message)}</div>", visible=True)
        choices = [(("📌 " if c.pinned else "") + c.title, str(c.id)) for c in convs]
        return gr.update(choices=choices), gr.update(value="", visible=False)

    async def open_conversation(self, conversation_id: str | None, owner: str, request: gr.Request):
        """Load a saved conversation into the chat, with its model, system prompt and parameters."""
        owner = owner_for(request, None, owner)
        if not conversation_id:
            return (gr.skip(),) * 9 + (gr.update(),)
        try:
            detail = await self.s.db(repo.get_conversation, owner=owner, conversation_id=conversation_id)
        except StorageError as e:
            gr.Warning(e.message)
            return (gr.skip(),) * 9 + (gr.update(),)
        c = detail.conversation
        value = stored_to_chatbot(detail.messages, self._label_for)
        p = c.params or {}
        defaults = Params()
        return (
            value,
            str(c.id),
            c.model or gr.skip(),
            c.system_prompt or "",
            p.get("temperature", defaults.temperature if defaults.temperature is not None else 1.0),
            p.get("top_p", 1.0),
            p.get("max_tokens", defaults.max_tokens),
            p.get("seed") or 0,
            p.get("effort") or "default",
            gr.update(value=c.title),
        )

    async def show_stopped(self, chat: Any, conversation_id: str | None, owner: str, request: gr.Request):
        """After Stop: the conversation as saved, so the stopped reply shows its note and metrics at once
        (Gradio cancels the stream before its last update).

        Waits until the reply is saved, then a moment more: Gradio ends the cancelled stream with its
        last value, and this must reach the page after that, not before.
        """
        owner = owner_for(request, None, owner)
        conversation_id = await chat.settled(owner) or conversation_id
        if not conversation_id:
            return (gr.skip(),) * 4
        await asyncio.sleep(STOPPED_REDRAW_DELAY)
        try:
            detail = await self.s.db(repo.get_conversation, owner=owner, conversation_id=conversation_id)
        except StorageError:
            return (gr.skip(),) * 4  # the partial text stays on screen; it is saved or it was never shown
        value = stored_to_chatbot(detail.messages, self._label_for)
        return value, value, value, str(detail.conversation.id)

    def _label_for(self, provider: str | None, model: str | None) -> str:
        if not provider:
            return "assistant"
        try:
            p, info = self.s.registry.resolve(f"{provider}:{model}")
            return f"{p.label} · {info.display}"
        except ChatError:
            return f"{provider}:{model}"

    def new_chat(self):
        return [], None, gr.update(value=None), gr.update(value="")

    async def rename(self, conversation_id: str | None, title: str, owner: str, request: gr.Request):
        owner = owner_for(request, None, owner)
        if not conversation_id:
            gr.Warning("Open a conversation first.")
            return gr.skip()
        if not isinstance(title, str):
            gr.Warning("Not renamed: the title must be text.")
            return gr.skip()
        try:
            await self.s.db(repo.rename_conversation, owner=owner, conversation_id=conversation_id, title=clean_text(title))
        except StorageError as e:
            gr.Warning(f"Not renamed: {e.message}")
            return gr.skip()
        gr.Info("Renamed.")
        return (await self.list_choices(owner, request))[0]

    async def toggle_pin(self, conversation_id: str | None, owner: str, request: gr.Request):
        owner = owner_for(request, None, owner)
        if not conversation_id:
            gr.Warning("Open a conversation first.")
            return gr.skip()
        try:
            detail = await self.s.db(repo.get_conversation, owner=owner, conversation_id=conversation_id)
            await self.s.db(repo.set_pinned, owner=owner, conversation_id=conversation_id, pinned=not detail.conversation.pinned)
        except StorageError as e:
            gr.Warning(e.message)
            return gr.skip()
        return (await self.list_choices(owner, request))[0]

    async def delete(self, conversation_id: str | None, owner: str, request: gr.Request):
        owner = owner_for(request, None, owner)
        if not conversation_id:
            gr.Warning("Open a conversation first.")
            return gr.skip(), gr.skip(), gr.skip(), gr.update(visible=False)
        try:
            await self.s.db(repo.delete_conversation, owner=owner, conversation_id=conversation_id)
        except StorageError as e:
            gr.Warning(e.message)
            return gr.skip(), gr.skip(), gr.skip(), gr.update(visible=False)
        gr.Info("Conversation deleted.")
        return (await self.list_choices(owner, request))[0], [], None, gr.update(visible=False)

    async def export(self, conversation_id: str | None, fmt: str, owner: str, request: gr.Request):
        """A JSON or Markdown file of the open conversation, or of all of them when none is open."""
        owner = owner_for(request, None, owner)
        try:
            if fmt == "json":
                text = await self.s.db(repo.export_json, owner=owner, conversation_id=conversation_id or None)
            else:
                text = await self.s.db(repo.export_markdown, owner=owner, conversation_id=conversation_id or None)
            title = "parley-all-conversations"
            if conversation_id:
                detail = await self.s.db(repo.get_conversation, owner=owner, conversation_id=conversation_id)
                title = _safe_filename(detail.conversation.title)
        except StorageError as e:
            gr.Warning(e.message)
            return gr.update(visible=False)
        path = self.exports.write(owner, f"{title}.{'json' if fmt == 'json' else 'md'}", text)
        return gr.update(value=str(path), visible=True)

    async def export_json(self, conversation_id: str | None, owner: str, request: gr.Request):
        return await self.export(conversation_id, "json", owner, request)

    async def export_markdown(self, conversation_id: str | None, owner: str, request: gr.Request):
        return await self.export(conversation_id, "md", owner, request)

    async def import_file(self, file: Any, owner: str, request: gr.Request):
        owner = owner_for(request, None, owner)
        if file is None:
            return gr.skip()
        path = Path(file if isinstance(file, str) else getattr(file, "name", ""))
        try:
            if path.stat().st_size > self.s.config.max_upload_bytes:
                raise StorageError(f"The file is larger than {self.s.config.max_upload_bytes // (1024 * 1024)} MB.")
            data = path.read_bytes()
            created = await self.s.db(repo.import_json, owner=owner, data=data)
        except (OSError, StorageError) as e:
            gr.Warning(f"Import failed, nothing was saved: {getattr(e, 'message', e)}")
            return gr.skip()
        gr.Info(f"Imported {len(created) if hasattr(created, '__len__') else created} conversation(s).")
        return (await self.list_choices(owner, request))[0]

    async def undo(self, data: gr.UndoData, history: list[Any], conversation_id: str | None, owner: str, request: gr.Request):
        """Undo removes the last turn from the store too, so a reload shows what the chat shows."""
        owner = owner_for(request, None, owner)
        if not conversation_id:
            return
        # By the undone message's index: the chat may arrive before or after Gradio's own undo popped it,
        # and a refused message (never saved) must not take the stored turn before it along.
        index = data.index if isinstance(data.index, int) else data.index[0]
        try:
            await self.s.db(undo_turn, owner=owner, conversation_id=conversation_id,
                            kept_user_texts=user_texts(history[:index]), undone=content_text(data.value))
        except NotFound:
            return
        except StorageError as e:
            gr.Warning(e.message)

    async def feedback(self, data: gr.LikeData, history: list[Any], conversation_id: str | None, owner: str, request: gr.Request):
        """Save a like / dislike on the stored reply the bubble belongs to."""
        owner = owner_for(request, None, owner)
        if not conversation_id:
            return
        index = data.index if isinstance(data.index, int) else data.index[0]
        turn_number = user_turns(history[: index + 1])  # the reply answers the n-th user message
        value = None if data.liked is None else ("like" if data.liked else "dislike")
        try:
            detail = await self.s.db(repo.get_conversation, owner=owner, conversation_id=conversation_id)
            replies = [m for m in detail.messages if m.role == "assistant"]
            if not 0 < turn_number <= len(replies):
                return
            await self.s.db(repo.set_feedback, owner=owner, message_id=replies[turn_number - 1].id, feedback=value)
        except NotFound:
            return
        except StorageError as e:
            gr.Warning(e.message)
