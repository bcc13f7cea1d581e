"""What ui/branches.py puts in the page: the CSS and the script that draw the versions navigator, and the js
of its events. The script only draws what Python's map says and sends back what was clicked; every rule
(ownership, which versions exist, what a fork copies) is the server's."""

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
