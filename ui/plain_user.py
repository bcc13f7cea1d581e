"""User messages shown as typed: "What is 2**10 + 17*3?" keeps its asterisks.

Gradio's Chatbot renders every message as markdown (`render_markdown` is one switch for both roles),
and the replies need it. A user's text is not markdown: it is what they typed. Escaping it on the
server would change the value itself, so the edit box, the copy button and the history Gradio sends
back would all show the backslashes. The fix is on the page only: each user bubble carries its raw
text in its `aria-label` ("user's message: ..."), and this script shows that text, literally, in
place of the rendered markdown. Svelte's own nodes are hidden, never replaced, so its redraws keep
working; a redraw that changes the text is picked up by the next check. The same holds in every
Chatbot on the page (chat, compare panes) and for a conversation reopened from storage.
"""

from __future__ import annotations

#: The prefix Gradio 6's chatbot writes before a message's raw text in its aria-label.
LABEL_PREFIX = "user's message: "

#: For launch(head=...). Follows ui/chatbox.py's CHIP_SIZES: one observer, at most one pass per frame.
PLAIN_USER_HEAD = """<style>
[data-testid='user'][data-parley-plain] .message-content > span.md { display: none; }
[data-testid='user'] .message-content > .parley-plain { white-space: pre-wrap; overflow-wrap: anywhere; }
</style>
<script>
(() => {
  const PREFIX = "%PREFIX%";
  const plain = () => {
    document.querySelectorAll("[data-testid='user']").forEach((bubble) => {
      const label = bubble.getAttribute("aria-label") || "";
      const md = bubble.querySelector(":scope > .message-content > span.md");
      if (!md || !label.startsWith(PREFIX)) return;  // a file, or not a text message
      const text = label.slice(PREFIX.length);
      const box = md.parentElement;
      let shown = box.querySelector(":scope > .parley-plain");
      if (shown && shown.textContent === text && bubble.dataset.parleyPlain === "1") return;
      if (!shown) {
        shown = document.createElement("span");
        shown.className = "parley-plain";
        box.appendChild(shown);
      }
      shown.textContent = text;  // text, never HTML: nothing the user typed is interpreted
      bubble.dataset.parleyPlain = "1";
    });
  };
  let queued = false;
  new MutationObserver(() => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; plain(); });
  }).observe(document.documentElement, { childList: true, subtree: true, attributes: true, attributeFilter: ["aria-label"] });
})();
</script>""".replace("%PREFIX%", LABEL_PREFIX)
