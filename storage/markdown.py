"""The Markdown rendering of conversations: readable anywhere, HTML in it kept as plain text.

A conversation is shown as its current path (the versions shown in Parley); a line says how many
messages of other versions (retries, edits) it leaves out, which Parley and the JSON export keep.

The JSON export (storage/transfer.py) is the one that imports back and carries files' bytes; this
one names each file and links it as `attachments/<sha256>-<name>`, where a bundle would put it.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime

from storage.models import AttachmentRef, ConversationDetail, MessagePublic


def escape_md(text: str) -> str:
    """Text that renders as itself: HTML in it stays text (<, > and & escaped); Markdown is kept."""
    return html.escape(text, quote=False)


def to_markdown(details: list[ConversationDetail]) -> str:
    """One Markdown document for these conversations, newest information first in each header."""
    return "\n\n---\n\n".join(_conversation_md(d) for d in details) + "\n"


def _conversation_md(d: ConversationDetail) -> str:
    c = d.conversation
    lines = [f"# {escape_md(c.title)}", ""]
    facts = [f"Created {_when(c.created_at)}"]
    if c.model:
        facts.append(f"model {escape_md(c.model)}")
    lines += ["*" + " · ".join(facts) + "*", ""]
    if d.other_messages:
        count = f"{d.other_messages} message of other versions (retries and edits) is" if d.other_messages == 1 else \
            f"{d.other_messages} messages of other versions (retries and edits) are"
        lines += [f"*The versions shown in Parley; {count} left out here: Parley and its JSON export keep them.*", ""]
    if c.system_prompt:
        lines += ["**System prompt**", "", _quote(c.system_prompt), ""]
    for m in d.messages:
        lines += _message_md(m)
    return "\n".join(lines).rstrip()


def _message_md(m: MessagePublic) -> list[str]:
    heading = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}.get(m.role, "Message")
    if m.role == "assistant" and (m.provider or m.model):
        heading += " · " + escape_md(":".join(x for x in (m.provider, m.model) if x))
    lines = [f"## {heading}", ""]
    if m.reasoning:
        lines += ["**Reasoning**", "", _quote(m.reasoning), ""]
    lines += [escape_md(m.content) if m.content else "*(empty)*", ""]
    if m.attachments:
        lines += [f"- {_attachment_md(a)}" for a in m.attachments] + [""]
    for call in m.tool_calls or []:
        name = escape_md(str(call.get("name", "")))
        lines += [f"*Tool call* `{name}`", "", _quote(str(call.get("arguments", ""))), ""]
        if call.get("result") is not None:
            lines += ["*Result*", "", _quote(str(call["result"])), ""]
    notes = []
    if m.finish_reason and m.finish_reason != "stop":
        notes.append(escape_md(m.finish_reason))
    if m.error:
        notes.append("error: " + escape_md(" ".join(m.error.split())))
    if m.input_tokens is not None or m.output_tokens is not None:
        notes.append(f"{m.input_tokens or 0} tokens in, {m.output_tokens or 0} out")
    if m.duration_ms is not None:
        notes.append(f"{m.duration_ms / 1000:.1f} s")
    if m.feedback:
        notes.append(m.feedback)
    if notes:
        lines += ["*" + " · ".join(notes) + "*", ""]
    return lines


def attachment_path(sha256: str, name: str) -> str:
    """Where the Markdown export links a file: `attachments/<sha256>-<name made URL-safe>`."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "file"
    return f"attachments/{sha256}-{safe[:100]}"


def _attachment_md(a: AttachmentRef) -> str:
    # The name is a link's text: escape what would end or break the link, and HTML as everywhere.
    label = re.sub(r"([\\\[\]`*_])", r"\\\1", escape_md(a.name))
    facts = [_mime_label(a.mime)]
    if a.width and a.height:
        facts.append(f"{a.width}×{a.height} px")
    if a.pages:
        facts.append(f"{a.pages} page" + ("s" if a.pages != 1 else ""))
    facts.append(human_size(a.size))
    return f"📎 [{label}]({attachment_path(a.sha256, a.name)}) ({', '.join(facts)})"


def _mime_label(mime: str) -> str:
    if mime.startswith("image/"):
        return mime.split("/", 1)[1].split(";")[0].upper() + " image"
    if mime == "application/pdf":
        return "PDF"
    return "text" if mime.startswith("text/") else escape_md(mime)


def human_size(size: int) -> str:
    """240 KB, 1.2 MB: decimal units, as file managers show them."""
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.0f} KB" if size >= 10_000 else f"{size / 1000:.1f} KB"
    return f"{size / 1_000_000:.1f} MB"


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in escape_md(text).splitlines() or [""])


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
