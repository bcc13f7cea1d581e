"""Keyboard and phone: shortcuts with a `?` help, focus on load, Escape stops a reply, the sidebar on phones,
and the layout fixes that go with them (four compare panes, the chat's clear/copy icons).

All of it is browser-side: `KEYS_HEAD` is one `<style>` and one `<script>` for launch(head=...). The shortcuts
press the app's own buttons (New chat, Stop, a reply's Copy, a saved conversation), so every one does exactly
what the click does, through the same events.
"""

from __future__ import annotations

import json
from typing import NamedTuple


class Shortcut(NamedTuple):
    keys: str  # as shown in the help (Ctrl reads ⌘ on a Mac)
    does: str
    aria: str  # the aria-keyshortcuts value, for screen readers to announce on the control


#: What the `?` help lists (and the README). Chosen to be the keys chat apps use (ChatGPT's new chat, focus and
#: help; Slack's and Discord's Alt+↑/↓; Ctrl+K for search), none a screen reader needs: NVDA, JAWS, Orca and
#: Narrator command with Insert or Caps Lock, VoiceOver with Ctrl+Option, browse mode with bare letters and
#: arrows; here every key but Escape and `?` has Ctrl, Alt or Shift, and `?` is read only outside text boxes.
#: Copy is Ctrl+Shift+Y, not ChatGPT's Ctrl+Shift+C: in Chrome and Edge that opens the element inspector.
SHORTCUTS: tuple[Shortcut, ...] = (
    Shortcut("Ctrl + Shift + O", "New chat", "Control+Shift+O Meta+Shift+O"),
    Shortcut("Shift + Esc", "Go to the message box", "Shift+Escape"),
    Shortcut("Esc", "Stop the reply or the comparison (while one streams)", "Escape"),
    Shortcut("Ctrl + Shift + Y", "Copy the last reply", "Control+Shift+Y Meta+Shift+Y"),
    Shortcut("Alt + ↑ / Alt + ↓", "Previous / next saved conversation", "Alt+ArrowUp Alt+ArrowDown"),
    Shortcut("Ctrl + K", "Search your conversations", "Control+K Meta+K"),
    Shortcut("? or Ctrl + /", "This list of shortcuts", "Shift+? Control+/"),
)

#: Gradio's own phone breakpoint: at or below it the sidebar is as wide as the screen and covers the chat.
PHONE_MAX_PX = 768

KEYS_CSS = f"""
/* Focus shows on every control reached with the keyboard (text boxes: ui/a11y.py). */
:is(button, a[href], summary, [role="button"], [role="tab"], [role="option"], input[type="checkbox"],
    input[type="radio"]):focus-visible {{ outline: 2px solid var(--color-accent) !important; outline-offset: 2px; }}

/* The chat's Clear / Copy-all icons get a strip of their own above the messages, so a message scrolled to the
   top never runs under them (they floated over the first bubble). */
#chatbot > .wrapper {{ display: flex; flex-direction: column; }}
#chatbot > .wrapper > .top-panel {{ position: static; align-self: flex-end; margin: 4px 6px 0 0; flex: none; }}
#chatbot > .wrapper > .bubble-wrap {{ flex: 1 1 0; min-height: 0; }}

/* Compare: four panes are two rows of two when four in a row would not fit (they fell into 3 + 1), and one
   column on a phone; the per-pane settings above them (narrower) likewise. The tab is the container, so an open
   sidebar counts. A pane that is not shown is not in the page, so these rules need four. */
#compare-arena {{ container-type: inline-size; container-name: arena; }}
@container arena (max-width: 1100px) {{
  .row:has(> #cmp-pane-3) {{ display: grid !important; grid-template-columns: repeat(2, minmax(0, 1fr)); }}
  .row:has(> #cmp-pane-3) > .column {{ min-width: 0 !important; }}
}}
@container arena (max-width: 900px) {{
  .row:has(> .column #cmp-model-3) {{ display: grid !important; grid-template-columns: repeat(2, minmax(0, 1fr)); }}
  .row:has(> .column #cmp-model-3) > .column {{ min-width: 0 !important; }}
}}
@container arena (max-width: 560px) {{
  .row:has(> #cmp-pane-3), .row:has(> .column #cmp-model-3) {{ grid-template-columns: minmax(0, 1fr); }}
}}

/* Phones: the sidebar starts closed (the script closes it); until then it is not drawn, so the chat never
   flashes behind a full-screen sidebar. */
html.parley-phone-start .sidebar {{ visibility: hidden; }}
@media (max-width: {PHONE_MAX_PX}px) {{
  #chatbot {{ height: calc(100dvh - 210px) !important; min-height: 240px; }}
  #parley-keys-open {{ display: none; }}
}}

#parley-announce {{ position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }}
#parley-keys-open {{ position: fixed; left: 12px; bottom: 12px; z-index: 1002; border-radius: 999px; width: 28px; height: 28px;
  border: 1px solid var(--border-color-primary); background: var(--background-fill-primary); color: var(--body-text-color);
  cursor: pointer; font-weight: 600; }}
#parley-keys {{ border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 1rem 1.25rem; max-width: 32rem;
  background: var(--background-fill-primary); color: var(--body-text-color); font-family: var(--font); }}
#parley-keys button {{ font: inherit; padding: 4px 14px; border-radius: 6px; cursor: pointer;
  border: 1px solid var(--border-color-primary); background: var(--button-secondary-background-fill); color: inherit; }}
#parley-keys::backdrop {{ background: rgb(0 0 0 / .35); }}
#parley-keys h2 {{ margin: 0 0 .5rem 0; font-size: 1.15rem; }}
#parley-keys table {{ border-collapse: collapse; width: 100%; }}
#parley-keys th, #parley-keys td {{ text-align: left; padding: 4px 8px 4px 0; vertical-align: top; font-weight: normal; }}
#parley-keys kbd {{ font-family: var(--font-mono); font-size: .9em; white-space: nowrap; }}
#parley-keys p {{ margin: .5rem 0; font-size: .9em; }}
"""

# Why each part is there is said beside it; the shortcut table comes from SHORTCUTS (one list for the help,
# the README and aria-keyshortcuts).
KEYS_JS = """
(() => {
  const SHORTCUTS = __SHORTCUTS__;
  const phone = window.matchMedia("(max-width: __PHONE__px)");
  const $ = (sel) => document.querySelector(sel);
  const shown = (el) => !!el && el.getClientRects().length > 0;
  const typing = (el) => !!el && (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT" ||
    (el.tagName === "INPUT" && !["checkbox", "radio", "button", "submit", "range", "file", "color"].includes(el.type)));
  if (phone.matches) document.documentElement.classList.add("parley-phone-start");

  let live;
  const announce = (text) => {  // for screen readers: what a shortcut did, when nothing on screen says it
    if (!live) { live = document.createElement("div"); live.id = "parley-announce"; live.setAttribute("role", "status");
      document.body.appendChild(live); }
    live.textContent = ""; setTimeout(() => { live.textContent = text; }, 50);
  };
  const toggle = () => $(".sidebar .toggle-button");
  const closeSidebarOnPhone = () => { if (phone.matches && $(".sidebar.open")) toggle()?.click(); };
  const openSidebar = () => { if (!$(".sidebar.open")) toggle()?.click(); };
  const focusBox = () => {  // on the Chat tab, which is shown first if another tab is open
    const tab = $("#tab-chat-button");
    if (tab && tab.getAttribute("aria-selected") !== "true") { tab.click(); requestAnimationFrame(() => $("#msg textarea")?.focus()); }
    else $("#msg textarea")?.focus();
  };

  // The help: a native modal dialog (focus moves in and comes back, Escape closes it, the page behind is inert).
  let dialog;
  const help = () => {
    if (!dialog) {
      dialog = document.createElement("dialog");
      dialog.id = "parley-keys";
      dialog.setAttribute("aria-labelledby", "parley-keys-title");
      const rows = SHORTCUTS.map(([keys, does]) => `<tr><th scope="row"><kbd>${keys}</kbd></th><td>${does}</td></tr>`).join("");
      dialog.innerHTML = `<h2 id="parley-keys-title">Keyboard shortcuts</h2>
        <table><thead><tr><th scope="col">Keys</th><th scope="col">Does</th></tr></thead><tbody>${rows}</tbody></table>
        <p>On a Mac, ⌘ works wherever Ctrl is written. Tab and Shift + Tab move between controls; from the message box,
        Shift + Tab reaches the last reply's buttons (Retry, Undo, Copy…).</p>
        <form method="dialog"><button id="parley-keys-close">Close</button></form>`;
      document.body.appendChild(dialog);
    }
    if (!dialog.open) dialog.showModal();
  };

  const copyLast = () => {
    const buttons = document.querySelectorAll("#chatbot .message-buttons-left button[aria-label='Copy message']");
    const last = buttons[buttons.length - 1];
    if (last) { last.click(); announce("Last reply copied"); } else { announce("No reply to copy yet"); }
  };
  let stepped = null;
  const step = (by) => {  // the saved conversations, in the sidebar's order; the open one is checked
    const items = [...document.querySelectorAll("#conv-list input[type='radio']")];
    if (!items.length) { announce("No saved conversations"); return; }
    // The open one is checked; while the list is redrawn, none is: then the one this last opened, or the one
    // named in the address (?c=<id>).
    let at = items.findIndex((i) => i.checked);
    for (const id of [stepped, new URL(window.location.href).searchParams.get("c")]) {
      if (at < 0 && id) at = items.findIndex((i) => i.value === id);
    }
    const next = items[at < 0 ? (by > 0 ? 0 : items.length - 1) : Math.min(Math.max(at + by, 0), items.length - 1)];
    if (next.checked) { announce(by > 0 ? "This is the last conversation" : "This is the first conversation"); return; }
    next.click();
    stepped = next.value;
    announce("Opened " + (next.closest("label")?.textContent || "").trim());
  };

  // Tab out of a model list. Gradio's dropdown opens its list on focus, Tab then moved the focus into the list,
  // which closed and took the focus with it (to the page itself), and its key handler, a tick late, opened the
  // list again over the page. So Tab is kept from that handler and the focus goes to the next control itself.
  const TABBABLE = "a[href], button, input, select, textarea, summary, [tabindex]";
  const tabAway = (from, back) => {
    const list = [...document.querySelectorAll(TABBABLE)].filter((el) => el === from ||
      (el.tabIndex >= 0 && !el.disabled && shown(el) && !el.closest("[role='listbox'], [inert]")));
    const at = list.indexOf(from);
    const to = list[at + (back ? -1 : 1)];
    if (to) to.focus(); else from.blur();
  };
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (e.key === "Tab" && !e.ctrlKey && !e.altKey && !e.metaKey && t instanceof Element && t.matches("input[role='combobox']")) {
      e.stopPropagation(); e.preventDefault(); tabAway(t, e.shiftKey);
    }
  }, true);

  // The message box is disabled while a reply streams, which drops the focus to the page: when the box is back,
  // so is the focus (unless the user has gone elsewhere meanwhile).
  let boxLost = false;
  document.addEventListener("focusout", (e) => {
    if (e.target instanceof Element && e.target.matches("#msg textarea") && !e.relatedTarget) boxLost = true;
  });
  document.addEventListener("focusin", (e) => { if (!(e.target instanceof Element && e.target.matches("#msg textarea"))) boxLost = false; });
  new MutationObserver(() => {
    if (!boxLost) return;
    const box = $("#msg textarea");
    if (box && !box.disabled && (document.activeElement === document.body || !document.activeElement)) {
      boxLost = false; box.focus();
    }
  }).observe(document.documentElement, { attributes: true, attributeFilter: ["disabled"], childList: true, subtree: true });

  document.addEventListener("keydown", (e) => {
    if (e.defaultPrevented || e.isComposing || (dialog && dialog.open)) return;
    const t = document.activeElement;
    const ctrl = e.ctrlKey || e.metaKey;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    let act = null;
    if (key === "Escape" && !ctrl && !e.altKey) {
      if (e.shiftKey) act = focusBox;
      else if (!(t && t.matches("[role='combobox']"))) {  // a list's own Escape closes the list
        const stop = $("#msg button.stop-button");
        // The Compare tab's status says "Streaming into every pane" exactly while its panes stream.
        const comparing = $("#cmp-status");
        if (shown(stop) && shown($("#chatbot"))) act = () => { stop.click(); announce("Reply stopped"); };
        else if (shown(comparing) && comparing.textContent.includes("Streaming into every pane"))
          act = () => { $("#cmp-stop")?.click(); announce("Comparison stopped"); };
      }
    } else if (ctrl && e.shiftKey && !e.altKey && key === "o") {
      act = () => { $("#new-chat")?.click(); closeSidebarOnPhone(); focusBox(); announce("New chat"); };
    } else if (ctrl && e.shiftKey && !e.altKey && key === "y") {
      act = copyLast;
    } else if (ctrl && !e.shiftKey && !e.altKey && key === "k") {
      act = () => { openSidebar(); setTimeout(() => $("#conv-search input, #conv-search textarea")?.focus(), 50); };
    } else if (e.altKey && !ctrl && !e.shiftKey && (key === "ArrowUp" || key === "ArrowDown")) {
      if (!(t && t.matches("[role='combobox'], select"))) act = () => step(key === "ArrowUp" ? -1 : 1);
    } else if ((ctrl && !e.altKey && key === "/") || (key === "?" && !ctrl && !e.altKey && !typing(t))) {
      act = help;
    }
    if (act) { e.preventDefault(); act(); }
  });

  // Phones: a conversation picked (or a new chat) shows the chat, not the list it was picked from.
  document.addEventListener("change", (e) => { if (e.target instanceof Element && e.target.closest("#conv-list")) closeSidebarOnPhone(); });
  document.addEventListener("click", (e) => { if (e.target instanceof Element && e.target.closest("#new-chat")) closeSidebarOnPhone(); });

  // A phone starts with the sidebar closed: until the user first touches or types, a sidebar drawn open is
  // closed (Gradio draws it open, and sets it open again once more while the page loads, so once is not enough).
  let phoneStart = phone.matches;
  const endPhoneStart = () => { phoneStart = false; document.documentElement.classList.remove("parley-phone-start"); };
  for (const type of ["pointerdown", "keydown", "touchstart"]) document.addEventListener(type, endPhoneStart, { capture: true, once: true });
  setTimeout(endPhoneStart, 10000);  // whatever happens, the sidebar is never left hidden
  let closing = false;
  const keepClosed = () => {
    if (!phoneStart || closing || !$(".sidebar.open")) return;
    closing = true;
    setTimeout(() => {  // after the frame that drew it: a click in the same frame is undone
      closing = false;
      if (phoneStart && $(".sidebar.open")) { toggle()?.click(); setTimeout(keepClosed, 50); }
      setTimeout(() => { if (!$(".sidebar.open")) document.documentElement.classList.remove("parley-phone-start"); }, 350);
    }, 50);
  };

  // Once the app is drawn: the message box takes the focus (not on a phone, where that would raise the
  // on-screen keyboard over the page), controls say their shortcuts, the help has a button.
  let focused = false;
  const settle = () => {
    keepClosed();
    const box = $("#msg textarea");
    if (!focused && box) {
      focused = true;
      if (!phone.matches && (document.activeElement === document.body || !document.activeElement)) box.focus();
    }
    const marks = [["#new-chat", 0], ["#msg textarea", 1], ["#conv-search input, #conv-search textarea", 5]];
    for (const [sel, i] of marks) { const el = $(sel); if (el && !el.hasAttribute("aria-keyshortcuts")) el.setAttribute("aria-keyshortcuts", SHORTCUTS[i][2]); }
    if (!$("#parley-keys-open") && document.body) {
      const b = document.createElement("button");
      b.id = "parley-keys-open"; b.type = "button"; b.textContent = "?";
      b.setAttribute("aria-label", "Keyboard shortcuts"); b.title = "Keyboard shortcuts (?)";
      b.addEventListener("click", help);
      document.body.appendChild(b);
    }
  };
  const watch = new MutationObserver(settle);
  watch.observe(document.documentElement, { childList: true, subtree: true, attributes: true, attributeFilter: ["class"] });
  setTimeout(() => watch.disconnect(), 10000);
})();
"""

KEYS_HEAD = (
    f"<style>{KEYS_CSS}</style>\n"
    "<script>" + KEYS_JS.replace("__SHORTCUTS__", json.dumps([list(s) for s in SHORTCUTS]))
    .replace("__PHONE__", str(PHONE_MAX_PX)) + "</script>"
)
