"""Accessibility: contrast, names, visible focus on text boxes, a live region for finished replies, headings.

All of it is browser-side: `A11Y_HEAD` is one `<style>` and one `<script>` for launch(head=...). Gradio renders
the controls, so names and roles it leaves out are added to its elements as they appear (a MutationObserver),
and colours are fixed by overriding the theme's variables rather than each component's CSS.
axe-core checks the result on every tab, desktop and phone (tests/browser/test_a11y_browser.py).
"""

from __future__ import annotations

import json

#: Names for controls Gradio leaves unnamed or names after its component class ("Textbox"), by CSS selector.
#: The message box has only its placeholder for a name, and Gradio empties that once a message is sent.
NAMES: dict[str, str] = {
    "#msg textarea": "Message",
    "#msg .submit-button": "Send",
    "#msg .stop-button": "Stop",
    "#msg .upload-button": "Attach files",
    "#conv-search textarea": "Search your messages",
    "#conv-search .submit-button": "Search",
    "#cmp-msg textarea": "Prompt for every pane",
}

#: Each main tab's (hidden) heading, by its panel's id; a tab missing here is named after its button.
TAB_HEADINGS: dict[str, str] = {"tab-chat": "Chat", "tab-compare": "Compare", "tab-dashboard": "Dashboard", "tab-batch": "Batch"}

#: The largest reply read out whole when it finishes; a longer one is cut (the log itself holds all of it).
ANNOUNCE_CHARS = 1500

A11Y_CSS = """
/* Contrast (WCAG AA, 4.5:1) in the light theme: Soft's hint text is neutral-400 (2.5:1 on white), its labels
   and accent primary-500 (3.6:1 on their tint, 4.3:1 on grey) and white on a primary-500 button 4.46:1.
   :root:root outranks the theme's :root, which Gradio loads after the head; the dark theme (.dark, nearer
   to the elements) keeps its own colours, which pass but for the accent (4.3:1 on its near-black). */
:root:root {
  --body-text-color-subdued: var(--neutral-600);
  --block-label-text-color: var(--primary-700);
  --block-title-text-color: var(--primary-700);
  --color-accent: var(--primary-600);
  --button-primary-background-fill: var(--primary-600);
  --button-primary-background-fill-hover: var(--primary-700);
  --checkbox-label-background-fill-selected: var(--primary-600);
}
.dark.dark.dark { --color-accent: var(--primary-400); }
/* Muted text was grey by opacity (3.6:1): a colour that passes instead, in both themes. !important: Gradio
   scopes the app's css (launch(css=...), where the opacity is set) under four classes. */
.gradio-container .parley-muted, .gradio-container .cmp-metric small, .gradio-container .cmp-empty,
.gradio-container table.cmp-matrix td small { opacity: 1 !important; color: var(--body-text-color-subdued); }
.gradio-container .parley-muted code { color: inherit; }
/* Text boxes show where the keyboard is: Gradio only tints their border, if that (other controls: ui/keys.py).
   Inset, so that containers with overflow: hidden do not clip it. */
.gradio-container textarea:focus-visible,
.gradio-container input:is([type=text], [type=search], [type=password], [type=number], [type=email], [type=url], :not([type])):focus-visible {
  outline: 2px solid var(--color-accent) !important; outline-offset: -2px;
}
/* The decorative arrow inside a folded note's title (the title itself is the button). */
.gradio-container .thought-group .title .arrow button { pointer-events: none; }
.parley-brand h1 { margin: 0 0 .2rem 0; font-size: var(--text-xxl); }
/* "Conversations" became an h2 for the outline (it was an h3): it keeps the h3's size. */
.gradio-container .sidebar .prose h2 { font-size: var(--text-lg); }
.parley-sr-only { position: absolute !important; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden;
                  clip: rect(0, 0, 0, 0); white-space: nowrap; border: 0; }
"""

A11Y_JS = """
(() => {
  const NAMES = __NAMES__;
  const ANNOUNCE_CHARS = __ANNOUNCE_CHARS__;
  const TAB_HEADINGS = __TAB_HEADINGS__;
  const text = (el) => (el ? el.innerText || el.textContent || "" : "").replace(/\\s+/g, " ").trim();
  const setAttr = (el, name, value) => { if (el.getAttribute(name) !== value) el.setAttribute(name, value); };

  // One polite live region of our own for the chat: the chat log itself is silenced (aria-live="off"), or a
  // screen reader would read every streamed token; this one speaks once, when the reply is done.
  let announcer = null;
  const announce = (message) => {
    if (!announcer) {
      announcer = document.createElement("div");
      announcer.id = "parley-announcer";
      announcer.className = "parley-sr-only";
      announcer.setAttribute("role", "status");
      announcer.setAttribute("aria-live", "polite");
      announcer.setAttribute("aria-atomic", "true");
      document.body.appendChild(announcer);
    }
    // Emptied first: the same words twice in a row (a retry) are read again.
    announcer.textContent = "";
    setTimeout(() => { announcer.textContent = message; }, 50);
  };
  // The reply is every bot message after the last user message: its text, then its folded notes (the metrics).
  const lastReply = () => {
    const parts = [];
    document.querySelectorAll("#chatbot [data-testid='bot'], #chatbot [data-testid='user']").forEach((el) => {
      if (el.dataset.testid === "user") parts.length = 0;
      else if (text(el)) parts.push(text(el));
    });
    let words = parts.join(" — ");
    if (words.length > ANNOUNCE_CHARS) words = words.slice(0, ANNOUNCE_CHARS) + "…";
    return words;
  };

  let streaming = false;
  const watchChat = () => {
    const now = document.querySelector("#msg .stop-button") !== null;
    if (streaming && !now) {
      // A beat later: the last update and a stopped reply's stored copy land just after the Stop button goes.
      setTimeout(() => { const words = lastReply(); if (words) announce("Reply finished: " + words); }, 300);
    }
    streaming = now;
    const log = document.querySelector("#chatbot [role='log']");
    if (log) setAttr(log, "aria-busy", now ? "true" : "false");
  };

  const fix = () => {
    for (const [selector, name] of Object.entries(NAMES)) {
      document.querySelectorAll(selector).forEach((el) => setAttr(el, "aria-label", name));
    }
    // Chat logs stream token by token: silent (the chat's finished reply is announced above; the compare
    // panes' progress is in its status line).
    document.querySelectorAll(".gradio-container [role='log'][aria-live]").forEach((el) => setAttr(el, "aria-live", "off"));
    const status = document.querySelector("#cmp-status");
    if (status) { setAttr(status, "role", "status"); setAttr(status, "aria-live", "polite"); }
    document.querySelectorAll("[id^='cmp-temp-'] input").forEach((el) => {
      setAttr(el, "aria-label", "Pane " + (Number(el.closest("[id^='cmp-temp-']").id.slice(9)) + 1) + " temperature");
    });
    // Example prompts: a "list" of buttons is not a list (aria-required-children), and each button's name
    // ("Select example 1: …") must contain what it shows: its own text names it.
    document.querySelectorAll(".examples[role='list']").forEach((el) => {
      el.setAttribute("role", "group");
      el.setAttribute("aria-label", "Example prompts");
    });
    document.querySelectorAll(".examples button.example[aria-label]").forEach((el) => el.removeAttribute("aria-label"));
    // Drop zones: the name says which upload it is and contains the words shown ("Drop File Here - or - …").
    document.querySelectorAll("button.upload-container:not(.hidden)").forEach((el) => {
      const shown = text(el);
      if (!shown) return;
      const label = text(el.closest(".block")?.querySelector("[data-testid='block-label']"));
      setAttr(el, "aria-label", label ? label + ": " + shown : shown);
    });
    // A folded note's title is the button; the arrow inside is a picture of its state, not a second button.
    document.querySelectorAll(".thought-group .title[role='button']").forEach((title) => {
      setAttr(title, "aria-expanded", title.classList.contains("expanded") ? "true" : "false");
      // inert, not disabled: Gradio sets `disabled` itself when it redraws the button.
      title.querySelectorAll("button:not([inert])").forEach((b) => { b.inert = true; });
      // A web address in the title (an error's) is linked by the markdown: a link inside a button. It stays as
      // text (read as part of the button's name); the full notice inside the fold keeps its link.
      title.querySelectorAll("a[href]").forEach((a) => { a.dataset.href = a.getAttribute("href"); a.removeAttribute("href"); });
    });
    // Headings: each tab of the page starts with one (hidden), under the sidebar's h1, so that a screen
    // reader's list of headings is an outline of the page.
    document.querySelectorAll("#main-tabs > [role='tabpanel'], #main-tabs > * > [role='tabpanel']").forEach((panel) => {
      if (panel.querySelector(":scope > h2.parley-sr-only")) return;
      const tab = document.getElementById(panel.getAttribute("aria-labelledby") || panel.id + "-button");
      const name = TAB_HEADINGS[panel.id] || text(tab).replace(/^[^\\p{L}\\p{N}]+/u, "");
      if (!name) return;
      const heading = document.createElement("h2");
      heading.className = "parley-sr-only";
      heading.textContent = name;
      panel.prepend(heading);
    });
    watchChat();
  };

  let queued = false;
  new MutationObserver(() => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; fix(); });
  }).observe(document.documentElement, { childList: true, subtree: true });
})();
"""

A11Y_HEAD = (
    f"<style>{A11Y_CSS}</style>\n<script>"
    + A11Y_JS.replace("__NAMES__", json.dumps(NAMES)).replace("__ANNOUNCE_CHARS__", str(ANNOUNCE_CHARS))
    .replace("__TAB_HEADINGS__", json.dumps(TAB_HEADINGS))
    + "</script>\n"
)
