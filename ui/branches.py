"""Versions and branches in the chat: the `‹ 2/3 ›` navigator, "⑂ Branch" and "Delete this version".

Gradio's Chatbot draws `options` on the last message only, so the controls are drawn by a small script
(`SCRIPT`) under the chat's rows. Python tells it what to draw through a hidden Textbox (`map`, JSON). Open,
reload, switch and fork send the map with the chat they draw; after anything else that changes the chat (a
turn, Retry, Edit, Undo, Stop) the script asks for it once the chat is idle again, never per streamed token.
(The chat's gr.State cannot say so: Gradio 6.31 fires a State's change only after a queued event, and
ChatInterface updates its state in unqueued ones.) A click keeps what was asked and clicks a hidden button,
whose event's js hands it to `BranchHandlers.act` as the `action` box's value (a Textbox fires its input event
on key presses only, so writing into one fires nothing); the handler runs the core use case and redraws the
chat from the returned path.

The map is keyed by row: Gradio groups consecutive messages of one role into one `.message-row`, and
`branch_map` groups the chat's value the same way. Refused turns are shown but never stored, so the
chat's user messages are matched to the stored path by text, skipping refused ones: the keys follow
the chat as shown, whatever it holds that the store does not.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from chat.context import clean_text
from core.conversations import ConversationError, Opened
from core.identity import owner_for
from core.services import Services
from ui.branches_page import CSS as CSS  # re-exported: ui/layout.py adds it to the page's CSS
from ui.branches_page import DROP_MAP, SCRIPT, SET_MAP, SHOWN_CHAT, TAKE_ACTION
from ui.convert import REFUSED_MARK, content_text, mark_of

if TYPE_CHECKING:
    from ui.sidebar import SidebarHandlers

#: The map when there is nothing to draw (no conversation, or one without versions).
EMPTY_MAP = ""
#: Longest action read from the page (three ids and an operation fit in well under this).
MAX_ACTION = 400
OPS = ("switch", "fork", "delete")
STALE = "This chat changed meanwhile (another tab or a new turn): nothing was done. Try again."


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def _norm(text: str) -> str:
    return " ".join(clean_text(text or "").split())


def _rows(history: Sequence[Any]) -> list[tuple[str, list[int]]]:
    """The chat's rows as Gradio draws them: consecutive messages of one role in one row (role, indexes)."""
    rows: list[tuple[str, list[int]]] = []
    for i, item in enumerate(history):
        role = _field(item, "role")
        if role not in ("user", "assistant"):
            continue
        if rows and rows[-1][0] == role:
            rows[-1][1].append(i)
        else:
            rows.append((role, [i]))
    return rows


def _refused(history: Sequence[Any], index: int) -> bool:
    """Whether the user message at `index` was refused (never stored): a refusal notice answers it."""
    for item in history[index + 1:]:
        if _field(item, "role") == "user":
            return False
        if mark_of(item) == REFUSED_MARK:
            return True
    return False


def branch_map(history: Sequence[Any], messages: Sequence[Any], versions: Mapping[uuid.UUID, Sequence[uuid.UUID]],
               conversation_id: str | None) -> str:
    """The script's map for the chat shown: under which row to draw which versions, and what Branch copies.

    `messages` is the stored current path, `versions` its messages' siblings (storage's detail). A user
    message of the chat is matched to the next stored one when their texts agree; a refused one is
    skipped; the first disagreement ends the map (the chat is ahead of or behind the store).
    """
    if not conversation_id:
        return EMPTY_MAP
    history = list(history or ())
    rows = _rows(history)
    stored_users = [(k, m) for k, m in enumerate(messages) if _field(m, "role") == "user"]
    items: list[dict[str, Any]] = []
    j = 0
    for r, (role, indexes) in enumerate(rows):
        if role != "user":
            continue
        for i in indexes:
            if _refused(history, i):
                continue
            if j >= len(stored_users) or _norm(content_text(_field(history[i], "content"))) != _norm(_field(stored_users[j][1], "content")):
                return _dump(conversation_id, len(rows), items)
            k, user = stored_users[j]
            j += 1
            if len(indexes) == 1:  # a row of several user messages has no one message to navigate
                items.extend(_item(r, "user", user.id, versions, fork=None))
            reply = messages[k + 1] if k + 1 < len(messages) and _field(messages[k + 1], "role") == "assistant" else None
            bot_row = r + 1 if indexes[-1] == i and r + 1 < len(rows) and rows[r + 1][0] == "assistant" else None
            if reply is not None and bot_row is not None:
                items.extend(_item(bot_row, "bot", reply.id, versions, fork=reply.id))
    return _dump(conversation_id, len(rows), items)


def _item(row: int, role: str, message_id: uuid.UUID, versions: Mapping[uuid.UUID, Sequence[uuid.UUID]],
          fork: uuid.UUID | None) -> list[dict[str, Any]]:
    siblings = list(versions.get(message_id, ()))
    if len(siblings) < 2 and fork is None:
        return []
    ids = [str(s) for s in siblings] if len(siblings) > 1 else []
    at = siblings.index(message_id) if message_id in siblings else 0
    return [{"row": row, "role": role, "ids": ids, "at": at, "fork": str(fork) if fork else None}]


def _dump(conversation_id: str, rows: int, items: list[dict[str, Any]]) -> str:
    # `seq` makes every map a new value, so the page redraws even when two maps say the same (after a drop).
    return json.dumps({"conversation": conversation_id, "rows": rows, "items": items, "seq": uuid.uuid4().hex[:12]})


def map_for(history: Sequence[Any], c: Opened) -> str:
    """The map for an opened conversation shown as `history`."""
    return branch_map(history, c.messages, c.versions, c.id)


@dataclass(frozen=True)
class Action:
    """What the script asked: an operation on a message of the conversation the page showed."""

    op: str
    message_id: str
    conversation_id: str


def parse_action(raw: Any) -> Action | None:
    """The script's request, or None when it is not one (the box is the page's, so anything may arrive)."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_ACTION:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    op, mid, cid = data.get("op"), data.get("id"), data.get("conversation")
    if op not in OPS or not isinstance(mid, str) or not mid or not isinstance(cid, str) or not cid:
        return None
    return Action(op, mid, cid)


@dataclass
class BranchControls:
    """The hidden boxes between Python and the script."""

    map: gr.Textbox
    action: gr.Textbox
    go: gr.Button
    refresh: gr.Button


class BranchHandlers:
    """Compute the map; switch, fork and delete versions through core's use cases."""

    def __init__(self, services: Services, side: SidebarHandlers):
        self.s = services
        self.side = side

    async def refresh(self, history: list[Any] | None, conversation_id: str | None, owner: str | None, request: gr.Request) -> str:
        """The map for the chat as the page shows it (asked by the script when an event that redrew it ended)."""
        if not conversation_id:
            return EMPTY_MAP
        owner = owner_for(request, None, owner)
        try:
            c = await self.side.conversations.open(owner, conversation_id)
        except ConversationError:
            return EMPTY_MAP  # deleted meanwhile, or never saved: nothing to navigate
        return map_for(history or [], c)

    async def act(self, raw: Any, conversation_id: str | None, owner: str | None, request: gr.Request) -> tuple[Any, Any, Any]:
        """Run what the script asked; outputs: the chat's value, the open conversation's id, the map."""
        owner = owner_for(request, None, owner)
        action = parse_action(raw)
        skip = (gr.skip(), gr.skip(), gr.skip())
        if action is None:
            return skip
        if action.conversation_id != conversation_id:
            gr.Warning(STALE)
            return skip
        convs = self.side.conversations
        try:
            if action.op == "switch":
                c = await convs.switch(owner, conversation_id, action.message_id)
            elif action.op == "fork":
                c = await convs.fork(owner, conversation_id, action.message_id)
            else:
                c = await convs.delete_branch(owner, conversation_id, action.message_id)
        except ConversationError as e:
            gr.Warning(e.message)
            return skip
        if action.op == "fork":
            self.side.changed(request)
            gr.Info(f"Branched into a new conversation: “{c.title}”.")
        elif action.op == "delete":
            gr.Info("Version deleted.")
        value = await self.side.chat_value(owner, c)
        return value, c.id, map_for(value, c)


def build_branches(demo: gr.Blocks, services: Services, side: SidebarHandlers, chat: gr.ChatInterface, chatbot: gr.Chatbot,
                   conversation_id: gr.State, owner: gr.State) -> BranchControls:
    """The hidden boxes, their events and the script (call inside the chat tab, after the ChatInterface)."""
    controls = BranchControls(
        # Never shown: the script receives it through its change event (a js handler gets hidden values too).
        map=gr.Textbox(EMPTY_MAP, visible=False, elem_id="branch-map"),
        # What the script asks (`act`'s input): filled in by the js of the hidden button's event.
        action=gr.Textbox("", visible=False, elem_id="branch-action"),
        # In the page but hidden ("hidden" keeps them in the DOM), for the script to click.
        go=gr.Button("Version", visible="hidden", elem_id="branch-go"),
        refresh=gr.Button("Versions", visible="hidden", elem_id="branch-refresh"),
    )
    handlers = BranchHandlers(services, side)
    chat_value = chat.chatbot_value
    controls.refresh.click(handlers.refresh, [chatbot, conversation_id, owner], [controls.map], js=SHOWN_CHAT,
                           api_visibility="private", show_progress="hidden")
    controls.map.change(None, [controls.map], None, js=SET_MAP)
    controls.go.click(handlers.act, [controls.action, conversation_id, owner], [chat_value, conversation_id, controls.map],
                      js=TAKE_ACTION, api_visibility="private", show_progress="hidden")
    chatbot.retry(None, None, None, js=DROP_MAP)
    chatbot.edit(None, None, None, js=DROP_MAP)
    demo.load(None, None, None, js=SCRIPT)
    return controls
