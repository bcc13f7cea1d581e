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
from ui.convert import REFUSED_MARK, content_text, mark_of

if TYPE_CHECKING:
    from ui.sidebar import SidebarHandlers

#: The map when there is nothing to draw (no conversation, or one without versions).
EMPTY_MAP = ""
#: Longest action read from the page (three ids and an operation fit in well under this).
MAX_ACTION = 400
OPS = ("switch", "fork", "delete")
STALE = "This chat changed meanwhile (another tab or a new turn): nothing was done. Try again."

CSS = """
#chatbot .parley-branches { display: inline-flex; flex-wrap: wrap; align-items: center; gap: 2px 4px; margin: 0 4px;
  font-size: var(--text-sm); color: var(--body-text-color-subdued); }
#chatbot .message-wrap > .parley-branches.user { align-self: flex-end; }
/* On the line of the row's own buttons (copy, edit, retry, like). */
#chatbot .message-buttons:has(> .parley-branches) { display: flex; flex-wrap: wrap; align-items: center; width: auto; max-width: 100%; }
#chatbot .parley-branches button { font: inherit; color: inherit; background: transparent; border: 1px solid transparent;
  border-radius: 6px; padding: 2px 6px; min-width: 28px; min-height: 28px; cursor: pointer; line-height: 1;
  display: inline-flex; align-items: center; justify-content: center; gap: 4px; }
#chatbot .parley-branches .nav button { font-size: 1.25em; }
#chatbot .parley-branches button:hover:not(:disabled) { background: var(--background-fill-secondary); border-color: var(--border-color-primary); }
#chatbot .parley-branches button:focus-visible { outline: 2px solid var(--color-accent); outline-offset: 1px; }
#chatbot .parley-branches button:disabled { opacity: .35; cursor: default; }
#chatbot .parley-branches .count { font-variant-numeric: tabular-nums; min-width: 2.5em; text-align: center; }
#chatbot .parley-branches .nav { display: inline-flex; align-items: center; }
#chatbot .parley-sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
/* While an event redraws the chat (a reply streams), the controls wait: the chat is about to change. */
#chatbot:has(> [data-testid='status-tracker']:not(.hide)) .parley-branches { opacity: .4; pointer-events: none; }
#branch-go, #branch-refresh { display: none !important; }
"""

#: Installed once per page (a load event's js). Draws the map's controls under their rows and keeps them
#: there: Gradio re-renders rows as the chat changes, so a MutationObserver redraws what went missing.
SCRIPT = """() => {
  if (window.parleyBranches) return;
  // Icons (Lucide's git-fork and trash-2, ISC licence), drawn in the text's colour.
  const svg = (body) => '<svg aria-hidden="true" width="14" height="14" viewBox="0 0 24 24" fill="none" stroke="currentColor" '
    + 'stroke-width="2" stroke-linecap="round" stroke-linejoin="round">' + body + "</svg>";
  const FORK = svg('<circle cx="12" cy="18" r="3"/><circle cx="6" cy="6" r="3"/><circle cx="18" cy="6" r="3"/>'
    + '<path d="M18 9v2c0 .6-.4 1-1 1H7c-.6 0-1-.4-1-1V9"/><path d="M12 12v3"/>');
  const TRASH = svg('<path d="M3 6h18"/><path d="M19 6v14c0 1-1 2-2 2H7c-1 0-2-1-2-2V6"/>'
    + '<path d="M8 6V4c0-1 1-2 2-2h4c1 0 2 1 2 2v2"/>');
  const S = { map: null, refocus: null, queued: false, busy: false, tracker: null, asked: null, timer: 0 };
  const wrap = () => document.querySelector("#chatbot .message-wrap");
  const tracker = () => document.querySelector("#chatbot > [data-testid='status-tracker']");
  const busy = () => { const t = tracker(); return !!t && !t.classList.contains("hide"); };
  const rowsOf = (w) => [...w.children].filter((el) => el.classList.contains("message-row"));
  // A row's bar goes at the end of the row's own buttons (copy, edit, retry...), on their line; after the
  // row when it has none.
  const holder = (row) => {
    const next = row.nextElementSibling;
    return next && next.classList.contains("message-buttons") ? next : null;
  };
  const barOf = (row) => {
    const h = holder(row);
    const b = h ? h.lastElementChild : row.nextElementSibling;
    return b && b.classList.contains("parley-branches") ? b : null;
  };
  const put = (row, b) => { const h = holder(row); if (h) h.append(b); else row.after(b); };
  const ask = (op, id, row, which) => {
    if (!S.map) return;
    if (op === "delete" && !window.confirm("Delete this version and everything after it? This cannot be undone.")) return;
    const asked = JSON.stringify({ op, id, conversation: S.map.conversation });
    S.refocus = op === "switch" ? { row, which, until: Date.now() + 5000 } : null;
    // The chat may still be settling from the last click (a second Enter comes quickly): wait a little for
    // it. A reply that streams for longer is not interrupted: the click is dropped.
    const send = (tries) => {
      if (busy()) { if (tries < 30) setTimeout(() => send(tries + 1), 100); return; }
      const go = document.querySelector("#branch-go");
      if (!go) return;
      S.asked = asked;
      go.click();
    };
    send(0);
  };
  const button = (label, text, title, onclick, cls, icon) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = cls || "";
    b.setAttribute("aria-label", label);
    if (title) b.title = title;
    if (icon) b.innerHTML = icon;  // a constant of this script, never data
    b.append(text);
    b.addEventListener("click", onclick);
    return b;
  };
  const bar = (item, key) => {
    const el = document.createElement("div");
    el.className = "parley-branches " + item.role;
    el.dataset.key = key;
    const what = item.role === "user" ? "message" : "reply";
    if (item.ids && item.ids.length > 1) {
      const n = item.ids.length, at = item.at;
      const nav = document.createElement("div");
      nav.className = "nav";
      nav.setAttribute("role", "group");
      nav.setAttribute("aria-label", "Versions of this " + what);
      const prev = button("Previous version", "‹", "Previous version", () => ask("switch", item.ids[at - 1], item.row, "prev"), "prev");
      const next = button("Next version", "›", "Next version", () => ask("switch", item.ids[at + 1], item.row, "next"), "next");
      prev.disabled = at <= 0;
      next.disabled = at >= n - 1;
      const count = document.createElement("span");
      count.className = "count";
      count.innerHTML = '<span aria-hidden="true"></span><span class="parley-sr"></span>';
      count.firstChild.textContent = (at + 1) + "/" + n;
      count.lastChild.textContent = "Version " + (at + 1) + " of " + n;
      nav.append(prev, count, next);
      el.append(nav);
      el.append(button("Delete this version", "", "Delete this version (and what follows it)",
                       () => ask("delete", item.ids[at], item.row, "delete"), "delete", TRASH));
    }
    if (item.fork) {
      el.append(button("Branch into a new conversation from here", "Branch", "Branch into a new conversation from here",
                       () => ask("fork", item.fork, item.row, "fork"), "fork", FORK));
    }
    return el;
  };
  // An event that redrew the chat ended (a turn, Retry, Edit, Undo, Stop...): ask for the map of what it shows.
  const idle = () => {
    const t = tracker();
    if (t !== S.tracker) {
      S.tracker = t;
      if (t) new MutationObserver(schedule).observe(t, { attributes: true, attributeFilter: ["class"] });
    }
    const now = busy();
    if (S.busy && !now) {
      // One request when the chat settles: Retry and Edit are chains of several events, idle in between.
      clearTimeout(S.timer);
      S.timer = setTimeout(() => { if (!busy()) document.querySelector("#branch-refresh")?.click(); }, 300);
    }
    S.busy = now;
  };
  const draw = () => {
    idle();
    const w = wrap();
    if (!w) return;
    const rows = rowsOf(w);
    const want = new Map();
    if (S.map) {
      S.map.items.forEach((item, i) => {
        const row = rows[item.row];
        if (row && row.classList.contains(item.role === "user" ? "user-row" : "bot-row")) want.set(row, [item, S.map.seq + ":" + i]);
      });
    }
    // Bars whose row went, moved or changed its versions go; the missing ones are drawn.
    w.querySelectorAll(".parley-branches").forEach((b) => {
      const got = b.parleyRow && want.get(b.parleyRow);
      if (!got || got[1] !== b.dataset.key || barOf(b.parleyRow) !== b) b.remove();
    });
    for (const [row, [item, key]] of want) {
      if (barOf(row)) continue;
      const b = bar(item, key);
      b.parleyRow = row;
      put(row, b);
    }
    // Keyboard users stay on the navigator they used: the chat is redrawn under them (more than once:
    // the new value, then Gradio's own copy of it), and each time the focused button goes with it.
    if (S.refocus && Date.now() > S.refocus.until) S.refocus = null;
    const lost = !document.activeElement || document.activeElement === document.body;
    if (S.refocus && S.map && lost) {
      const row = rows[S.refocus.row];
      const b = row && barOf(row);
      const target = b && (b.querySelector("button." + S.refocus.which + ":not(:disabled)") || b.querySelector("button:not(:disabled)"));
      if (target) target.focus();
    }
  };
  const schedule = () => {
    if (S.queued) return;
    S.queued = true;
    requestAnimationFrame(() => { S.queued = false; draw(); });
  };
  window.parleyBranches = {
    set(value) {
      let map = null;
      try { map = value ? JSON.parse(value) : null; } catch (e) { map = null; }
      S.map = map && Array.isArray(map.items) ? map : null;
      schedule();
    },
    // Retry and Edit change rows in place: what was drawn for them is stale until the next map.
    drop() { S.map = null; S.refocus = null; schedule(); },
    // What the last click asked, once (the hidden button's event sends it).
    take() { const asked = S.asked || ""; S.asked = null; return asked; },
  };
  new MutationObserver(schedule).observe(document.documentElement, { childList: true, subtree: true });
  // A click anywhere (the navigator's own comes before its request) means the user has moved on.
  document.addEventListener("pointerdown", () => { S.refocus = null; }, true);
}"""

SET_MAP = "(value) => { window.parleyBranches && window.parleyBranches.set(value); }"
TAKE_ACTION = "(action, ...rest) => [window.parleyBranches ? window.parleyBranches.take() : '', ...rest]"
#: The refresh sends the chat as the page shows it, cut to what the map needs: roles, the user messages'
#: text, and the refusal marks (a metadata id). A reply's text and every file stay in the browser.
SHOWN_CHAT = """(chat, ...rest) => {
  const text = (c) => typeof c === "string" ? c : Array.isArray(c) ? c.map(text).join("")
    : c && typeof c === "object" && typeof c.text === "string" ? c.text : "";
  const cut = (chat || []).map((m) => ({
    role: m.role,
    content: [{ type: "text", text: m.role === "user" ? text(m.content) : "" }],
    metadata: m.metadata && m.metadata.id ? { id: String(m.metadata.id) } : null,
  }));
  return [cut, ...rest];
}"""
DROP_MAP = "() => { window.parleyBranches && window.parleyBranches.drop(); }"


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
