"""Enter to the first and the last token painted, in Chromium through Playwright.

A capture-phase keydown listener stamps Enter; a MutationObserver watches the bot bubbles and, when
the reply's first (then last) word appears, stamps the next animation frame (the frame that paints it).
"""

from __future__ import annotations

from dataclasses import dataclass

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]

INSTALL = """([first, last]) => {
  const b = window.__bench = {t0: null, first: null, last: null};
  document.addEventListener("keydown", (e) => { if (e.key === "Enter" && b.t0 === null) b.t0 = performance.now(); }, true);
  const seen = (word) => { for (const el of document.querySelectorAll("[data-testid='bot']")) if (el.textContent.includes(word)) return true; return false; };
  let firstPending = false, lastPending = false;
  const obs = new MutationObserver(() => {
    if (b.t0 === null) return;
    if (b.first === null && !firstPending && seen(first)) { firstPending = true; requestAnimationFrame(() => { b.first = performance.now(); }); }
    if (b.last === null && !lastPending && seen(last)) { lastPending = true; requestAnimationFrame(() => { b.last = performance.now(); obs.disconnect(); }); }
  });
  obs.observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


@dataclass
class Paint:
    first: float  # seconds from Enter
    last: float


def measure(url: str, message_box: str, first_word: str, last_word: str, runs: int, settle: float = 1.0) -> list[Paint]:
    """`runs` fresh pages of the app at `url`; each types a message into `message_box` and presses Enter."""
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for _ in range(runs):
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                page = context.new_page()
                page.goto(url)
                box = page.locator(message_box).first
                box.wait_for(state="visible", timeout=60_000)
                page.wait_for_timeout(settle * 1000)  # the page's load events (identity, model list) finish first
                box.fill("hello")
                page.evaluate(INSTALL, [first_word, last_word])
                box.press("Enter")
                page.wait_for_function("window.__bench.last !== null", timeout=180_000, polling=200)
                b = page.evaluate("window.__bench")
                out.append(Paint((b["first"] - b["t0"]) / 1000, (b["last"] - b["t0"]) / 1000))
                context.close()
        finally:
            browser.close()
    return out
