"""The read-only page of a share link, `/share/<token>`, and its files, `/share/<token>/a/<attachment id>`.

An ASGI middleware (`SharePage`, added by app.launch_kwargs) answers these paths itself, before
Gradio sees them: `launch()` builds Gradio's app anew, so a route added to it beforehand would be
lost, while `app_kwargs["middleware"]` is kept. Because Gradio never sees the request, no login is
asked even with APP_USERS: the token is the permission, and it opens only what core/sharing.py's
rules let it open. A conversation's link shows its current path; one made for the whole tree also
shows every other version (retries, edits) in closed <details> blocks. The page is static HTML: every text is escaped (a message is shown as plain text
with code blocks, inline code and bold kept), it carries no script at all and says so in its
Content-Security-Policy, it is never cached, never indexed, and never sends its address (the token)
as a Referer. A dead link (revoked, unknown, malformed, or its conversation deleted) gets the same
404 page.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from core.compare_run import LETTERS
from core.services import Services
from core.sharing import SHARE_PREFIX, Sharing, SharingError
from storage.models import SHARE_COMPARISON, AttachmentData, AttachmentRef, SharedMessage, SharedPane, SharedView

log = logging.getLogger("parley.share")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: No script, no frames, no forms; styles inline; images only from this site (the link's own files).
PAGE_CSP = ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")
#: A file is never run as a page, whatever a browser makes of it.
FILE_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"
COMMON_HEADERS = [
    (b"cache-control", b"no-store"),  # a revoked link must not live on in a cache
    (b"referrer-policy", b"no-referrer"),  # the address holds the token
    (b"x-content-type-options", b"nosniff"),
    (b"x-robots-tag", b"noindex, nofollow"),
    (b"x-frame-options", b"DENY"),
]
NOT_VALID = "This link is not valid"
NOT_VALID_TEXT = "It may have been revoked by the person who shared it, or what it showed was deleted."
_FILE_PATH = re.compile(r"(?P<token>[^/]+)/a/(?P<attachment>[^/]+)")
_FENCE = re.compile(r"^```[^\n]*\n(.*?)(?:^```[ \t]*$|\Z)", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; background: #f6f7fb; color: #1f2330; }
main { max-width: 860px; margin: 0 auto; padding: 24px 16px 48px; }
header { border-bottom: 1px solid #dde0ea; margin-bottom: 16px; padding-bottom: 8px; }
header h1 { font-size: 1.35rem; margin: 0 0 4px; overflow-wrap: anywhere; }
.muted { color: #5b6173; font-size: .9rem; }
.msg { background: #fff; border: 1px solid #e1e4ee; border-radius: 10px; padding: 10px 14px; margin: 10px 0; }
.msg.user { background: #eef0ff; border-color: #d6dafc; }
.who { font-size: .8rem; font-weight: 600; color: #4a4f7a; margin-bottom: 4px; }
.text { white-space: pre-wrap; overflow-wrap: anywhere; line-height: 1.5; }
pre { background: #1f2330; color: #f3f4f8; padding: 10px; border-radius: 8px; overflow-x: auto; white-space: pre; }
code { background: rgba(127,127,160,.15); padding: 0 3px; border-radius: 4px; }
pre code { background: none; padding: 0; }
.note { font-size: .85rem; color: #8a4b00; margin-top: 6px; }
.files { display: flex; flex-wrap: wrap; gap: 8px; margin-bottom: 6px; }
.files img { max-height: 240px; max-width: 100%; border-radius: 6px; border: 1px solid #e1e4ee; }
.panes { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 12px; }
.winner { border-color: #2f9e44; box-shadow: 0 0 0 2px #b2f2bb; }
.version { font-weight: 400; color: #5b6173; }
details.versions { margin: 0 0 10px 18px; padding-left: 12px; border-left: 3px solid #d6dafc; }
details.versions > summary { cursor: pointer; color: #4a4f7a; font-size: .9rem; padding: 2px 0; }
details.versions .alternative + .alternative { border-top: 1px dashed #d6dafc; margin-top: 8px; }
@media (prefers-color-scheme: dark) {
  body { background: #15171e; color: #e4e6ee; } .msg { background: #1e2029; border-color: #2c2f3b; }
  .msg.user { background: #232747; border-color: #343a6a; } .who { color: #aab0e0; } .muted { color: #9ba1b3; }
  header { border-color: #2c2f3b; } .note { color: #ffb86b; } .version { color: #9ba1b3; }
  details.versions { border-color: #343a6a; } details.versions > summary { color: #aab0e0; }
}
"""


# -- rendering -----------------------------------------------------------------------------------


def render_text(text: str) -> str:
    """A message as safe HTML: everything escaped; fenced code blocks, inline code and **bold** kept."""
    out: list[str] = []
    last = 0
    for fence in _FENCE.finditer(text):
        out.append(_inline(text[last:fence.start()]))
        out.append(f"<pre><code>{html.escape(fence.group(1).rstrip(chr(10)))}</code></pre>")
        last = fence.end()
    out.append(_inline(text[last:]))
    return "".join(out)


def _inline(text: str) -> str:
    escaped = html.escape(text)
    escaped = _INLINE_CODE.sub(lambda m: f"<code>{m.group(1)}</code>", escaped)
    return _BOLD.sub(lambda m: f"<strong>{m.group(1)}</strong>", escaped)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1_000_000 else f"{max(n, 1) / 1e3:.0f} kB"


def _files(refs: list[AttachmentRef], base: str) -> str:
    if not refs:
        return ""
    items = []
    for ref in refs:
        url = html.escape(f"{base}/a/{ref.id}")
        name = html.escape(ref.name)
        if ref.mime.startswith("image/"):
            items.append(f'<a href="{url}" rel="noreferrer"><img src="{url}" alt="{name}" title="{name}"></a>')
        else:
            items.append(f'<a href="{url}" rel="noreferrer" download>📎 {name}</a> <span class="muted">{_size(ref.size)}</span>')
    return f'<div class="files">{"".join(items)}</div>'


def _notes(message: SharedMessage) -> str:
    notes = []
    if message.finish_reason == "pending":
        notes.append("This reply was still being written when the page was opened.")
    elif message.finish_reason in ("cancelled", "interrupted"):
        notes.append("This reply was stopped before it finished.")
    elif message.finish_reason == "length":
        notes.append("This reply was cut off at its length limit.")
    if message.error:
        notes.append(f"Error: {message.error}")
    return "".join(f'<div class="note">{html.escape(n)}</div>' for n in notes)


def _message(message: SharedMessage, base: str, who: str | None = None, extra_class: str = "", version: str = "") -> str:
    if who is None:
        who = "User" if message.role == "user" else (message.model or "Assistant")
    role = "user" if message.role == "user" else "assistant"
    tag = f' <span class="version">· {html.escape(version)}</span>' if version else ""
    return (f'<section class="msg {role} {extra_class}"><div class="who">{html.escape(who)}{tag}</div>'
            f'{_files(message.attachments, base)}<div class="text">{render_text(message.content)}</div>{_notes(message)}</section>')


def _pane(pane: SharedPane, base: str, revealed: bool) -> str:
    letter = LETTERS[pane.slot] if pane.slot < len(LETTERS) else str(pane.slot + 1)
    who = f"Model {letter}" + (f" · {pane.reply.model}" if revealed and pane.reply.model else "") + (" 🏆" if pane.winner else "")
    return _message(pane.reply, base, who=who, extra_class="winner" if pane.winner else "")


def _verdict(view: SharedView) -> str:
    if view.blind and not view.revealed:
        return "Blind comparison: the models stay hidden until the person who shared it votes."
    if view.verdict == "tie":
        return "Voted: a tie."
    if view.verdict == "both_bad":
        return "Voted: all answers bad."
    if view.verdict == "slot":
        return "Voted: 🏆 marks the best answer."
    return ""


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def render_page(view: SharedView, base: str) -> str:
    """The whole read-only page of a link; `base` is the link's own path (its files hang below it)."""
    if view.kind == SHARE_COMPARISON:
        what = "Comparison"
        body = _message(view.prompt, base, who="Prompt") if view.prompt else ""
        verdict = _verdict(view)
        if verdict:
            body += f'<p class="muted">{html.escape(verdict)}</p>'
        body += f'<div class="panes">{"".join(_pane(p, base, view.revealed) for p in view.panes)}</div>'
    elif view.whole_tree:
        what = "Conversation (every version)"
        body = _tree(view, base) if view.messages else '<p class="muted">No messages yet.</p>'
    else:
        what = "Conversation"
        body = "".join(_message(m, base) for m in view.messages) or '<p class="muted">No messages yet.</p>'
    return _document(
        view.title,
        f'<header><h1>{html.escape(view.title)}</h1><div class="muted">{what} shared from Parley · read-only · '
        f'started {_when(view.created_at)}</div></header>{body}',
    )


def _tree(view: SharedView, base: str) -> str:
    """Every version of a conversation, without script: the current path as the main line; after each
    message that has versions, the others (each with its own continuation) in a closed <details>.

    Built with an explicit stack, not recursion: a tree may nest branches hundreds deep.
    """
    messages = view.messages
    children: dict[int | None, list[int]] = {}
    for i, m in enumerate(messages):
        children.setdefault(m.parent, []).append(i)
    # The newest message of each subtree (children always come later): where a branch off the path
    # continues, as Parley itself would show it when switched to.
    newest = list(range(len(messages)))
    for i in range(len(messages) - 1, -1, -1):
        parent = messages[i].parent
        if parent is not None:
            newest[parent] = max(newest[parent], newest[i])
    on_path = set(view.path)

    def follow(options: list[int]) -> int:
        shown = [i for i in options if i in on_path]
        return shown[0] if shown else max(options, key=lambda i: newest[i])

    out: list[str] = []
    # Items: HTML to write, or (first message of a line, whether to list that message's other versions).
    stack: list[str | tuple[int, bool]] = [(follow(children.get(None, [])), True)]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        node: int | None
        node, list_versions = item
        pieces: list[str | tuple[int, bool]] = []
        while node is not None:
            siblings = children[messages[node].parent]
            version = f"Version {siblings.index(node) + 1} of {len(siblings)}" if len(siblings) > 1 else ""
            pieces.append(_message(messages[node], base, version=version))
            if version and list_versions:
                others = [s for s in siblings if s != node]
                label = f"{len(others)} other version" + ("s" if len(others) > 1 else "") + " of this message"
                pieces.append(f'<details class="versions"><summary>{label}</summary>')
                for other in others:
                    pieces += ['<div class="alternative">', (other, False), "</div>"]
                pieces.append("</details>")
            list_versions = True
            kids = children.get(node)
            node = follow(kids) if kids else None
        stack.extend(reversed(pieces))
    return "".join(out)


def render_not_found() -> str:
    return _document(NOT_VALID, f"<header><h1>{NOT_VALID}</h1></header><p>{NOT_VALID_TEXT}</p>")


def _document(title: str, body: str) -> str:
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="referrer" content="no-referrer"><meta name="robots" content="noindex, nofollow">'
            f'<title>{html.escape(title)} · Parley</title><style>{STYLE}</style></head>'
            f'<body><main>{body}</main></body></html>')


# -- the middleware ------------------------------------------------------------------------------


class SharePage:
    """ASGI middleware: answers `/share/...` itself (no login, no Gradio); passes everything else on."""

    def __init__(self, app: Any, services: Services):
        self.app = app
        self.sharing = Sharing(services)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "http":
            path = _relative_path(scope)
            if path.startswith(SHARE_PREFIX):
                await self._answer(scope, send, path[len(SHARE_PREFIX):])
                return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, send: Send, rest: str) -> None:
        head = scope.get("method") == "HEAD"
        if scope.get("method") not in ("GET", "HEAD"):
            await _respond(send, 405, b"Only GET.", "text/plain; charset=utf-8", [(b"allow", b"GET, HEAD")], head=False)
            return
        base = f"{scope.get('root_path', '').rstrip('/')}{SHARE_PREFIX}"
        try:
            file = _FILE_PATH.fullmatch(rest)
            if file is not None:
                data = await self.sharing.file(file["token"], file["attachment"])
                if data is not None:
                    await _send_file(send, data, head)
                    return
            elif "/" not in rest.rstrip("/"):
                token = rest.rstrip("/")
                view = await self.sharing.view(token)
                if view is not None:
                    page = render_page(view, base + token).encode()
                    await _respond(send, 200, page, "text/html; charset=utf-8", [(b"content-security-policy", PAGE_CSP.encode())], head)
                    return
        except SharingError as e:
            log.warning("shared page unavailable: %s", e.message)
            body = _document("Try again", f"<p>{html.escape(e.message)}</p>").encode()
            await _respond(send, 503, body, "text/html; charset=utf-8", [(b"content-security-policy", PAGE_CSP.encode())], head)
            return
        await _respond(send, 404, render_not_found().encode(), "text/html; charset=utf-8",
                       [(b"content-security-policy", PAGE_CSP.encode())], head)


async def _send_file(send: Send, data: AttachmentData, head: bool) -> None:
    # Images are shown in the page; anything else (PDF, text) downloads, under the name it was given.
    disposition = "inline" if data.mime.startswith("image/") else "attachment"
    name = quote(data.name, safe="")
    mime = data.mime if not data.mime.startswith("text/") or "charset" in data.mime else f"{data.mime}; charset=utf-8"
    headers = [(b"content-disposition", f"{disposition}; filename*=UTF-8''{name}".encode("latin-1")),
               (b"content-security-policy", FILE_CSP.encode())]
    await _respond(send, 200, data.data, mime, headers, head)


async def _respond(send: Send, status: int, body: bytes, content_type: str,
                   extra: list[tuple[bytes, bytes]], head: bool) -> None:
    headers = [(b"content-type", content_type.encode("latin-1")), (b"content-length", str(len(body)).encode()),
               *COMMON_HEADERS, *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


def _relative_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def middleware(services: Services) -> Any:
    """The entry for `launch(app_kwargs={"middleware": [...]})`: the shared pages."""
    from starlette.middleware import Middleware

    return Middleware(SharePage, services=services)
