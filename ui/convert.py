"""Conversions between Gradio chat values, chat-core messages and stored rows.

Gradio sends message content as a list of typed parts from the browser and as a plain string
from gradio_client; `to_messages` is the one place that accepts both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import gradio as gr
from gradio.components.chatbot import MetadataDict

from chat.attachments import format_size
from chat.context import clean_text
from chat.types import FinishReason, Message
from chat.types import tokens_per_second as rate_of
from compare.engine import speed_of
from core.repro import card_markdown, card_of
from core.store import FLAGGED_ERROR  # how a flagged reply is stored: stored_to_chatbot marks it
from core.usage import output_tokens_of, usage_of
from ui.notices import notice_title

# Titles of the metadata bubbles Parley adds around a reply. They are display only:
# never sent back to a model.
REASONING_TITLE = "💭 Reasoning"
NOTICE_PREFIX = "⚠️ "

# Marks on a notice's metadata id that say what became of the user message before it. Kept in
# the id (a field Gradio passes through both ways, and never shows) rather than in the wording,
# so that changing a notice's text can never leak a refused message into a model's context.
REFUSED_MARK = "parley-refused"  # refused before anything happened: never sent, never saved
FLAGGED_MARK = "parley-flagged"  # refused by moderation: saved as flagged, never sent


def content_text(content: Any) -> str:
    """The text of a Gradio message content: a string, a list of parts, or a single part."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        if content.get("type") == "text" or "text" in content:
            return str(content.get("text") or "")
        return ""  # files and components carry no text for the model
    if isinstance(content, (list, tuple)):
        return "".join(content_text(part) for part in content)
    return ""


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def _part_path(part: Any) -> str | None:
    """The file path of one content part in any of Gradio's shapes, else None.

    `{"path": p}` (gradio_client's history, a multimodal message's files), `{"type": "file", "file":
    {"path": p, ...}}` (the browser's history), `{"file": {...}}`, or a plain path string in a
    multimodal message's `files`.
    """
    if isinstance(part, Mapping):
        if isinstance(part.get("path"), str):
            return str(part["path"])
        inner = part.get("file")
        if isinstance(inner, Mapping) and isinstance(inner.get("path"), str):
            return str(inner["path"])
    return None


def message_files(message: Any) -> list[str]:
    """The file paths of a new message: a multimodal `{"text", "files"}` value; none for a plain string."""
    if not isinstance(message, Mapping):
        return []
    files = message.get("files") or []
    if not isinstance(files, (list, tuple)):
        return []
    paths = [f if isinstance(f, str) else _part_path(f) for f in files]
    return [p for p in paths if p]


def has_files(content: Any) -> bool:
    """Whether a history message's content carries a file (any of Gradio's shapes)."""
    if isinstance(content, (list, tuple)):
        return any(_part_path(part) is not None for part in content)
    return _part_path(content) is not None


def history_has_files(history: Iterable[Any]) -> bool:
    """Whether a stored user message of a Gradio history had files (the turn then loads them from the store)."""
    return any(has_files(_field(item, "content")) for item in _stored_users(history))


def mark_of(item: Any) -> str | None:
    """REFUSED_MARK or FLAGGED_MARK when this bubble is the notice of a refused message, else None."""
    metadata = _field(item, "metadata")
    ident = metadata.get("id") if isinstance(metadata, Mapping) else None
    if isinstance(ident, str):
        for mark in (REFUSED_MARK, FLAGGED_MARK):
            if ident.startswith(mark):
                return mark
    return None


def refusal_id(mark: str) -> str:
    """A metadata id carrying `mark`, unique per notice (Gradio nests bubbles by id)."""
    return f"{mark}-{uuid.uuid4().hex[:12]}"


def _user_marks(items: Sequence[Any]) -> dict[int, str]:
    """For each user message answered by a refusal notice: its index and the notice's mark."""
    marks: dict[int, str] = {}
    last_user: int | None = None
    for i, item in enumerate(items):
        role = _field(item, "role")
        if role == "user":
            last_user = i
        elif role == "assistant" and last_user is not None:
            mark = mark_of(item)
            if mark is not None:
                marks[last_user] = mark
    return marks


def _refused_turns(items: Sequence[Any]) -> set[int]:
    """Indexes of every bubble of a refused turn: the user message and all that answers it."""
    marks = _user_marks(items)
    skip: set[int] = set()
    for start in marks:
        skip.add(start)
        for i in range(start + 1, len(items)):
            if _field(items[i], "role") == "user":
                break
            skip.add(i)
    return skip


def to_messages(history: Iterable[Any], message: Any = None, system_prompt: str = "") -> list[Message]:
    """Chat-core messages from a Gradio history (either shape) plus the new user message.

    Display-only bubbles (reasoning, metrics, notices: anything with a metadata title) are
    dropped, and so is every refused turn (refused or flagged: what was refused is never sent);
    consecutive assistant bubbles are joined into one message.
    """
    out: list[Message] = []
    system = clean_text(system_prompt or "").strip()
    if system:
        out.append(Message(role="system", content=system))
    items = list(history or ())
    refused = _refused_turns(items)
    for index, item in enumerate(items):
        role = _field(item, "role")
        if role not in ("user", "assistant") or index in refused:
            continue
        metadata = _field(item, "metadata") or {}
        if isinstance(metadata, Mapping) and metadata.get("title"):
            continue
        content = _field(item, "content")
        text = clean_text(content_text(content))
        # A message of files only stays: its files are put back on it by position (core.attachments.with_history).
        if not text and not (role == "user" and has_files(content)):
            continue
        if out and out[-1].role == role == "assistant":
            out[-1] = Message(role="assistant", content=out[-1].content + "\n\n" + text)
        else:
            out.append(Message(role=role, content=text))
    if message is not None:
        text = clean_text(content_text(message))
        if text:
            out.append(Message(role="user", content=text))
    return out


def _stored_users(history: Iterable[Any]) -> list[Any]:
    """The user messages of a Gradio history that are stored: all but the refused ones (flagged ones are stored)."""
    items = list(history or ())
    marks = _user_marks(items)
    return [item for i, item in enumerate(items) if _field(item, "role") == "user" and marks.get(i) != REFUSED_MARK]


def user_texts(history: Iterable[Any]) -> list[str]:
    """The texts of the stored user messages in a Gradio history, in order (refused ones were never saved)."""
    return [clean_text(content_text(_field(item, "content"))) for item in _stored_users(history)]


def user_turns(history: Iterable[Any]) -> int:
    """How many stored user messages a Gradio history holds (display-only bubbles and refused messages excluded)."""
    return len(_stored_users(history))


def format_metrics(
    *,
    label: str,
    ttft_ms: float | None,
    tokens_per_second: float | None,
    output_tokens: int | None,
    input_tokens: int | None = None,
    estimated: bool = False,
    cached_input_tokens: int | None = None,
) -> str:
    """The short line under a reply: model, time to first token, speed, tokens ("~120 tokens" when estimated)."""
    parts = [label]
    if ttft_ms is not None:
        parts.append(f"first token {ttft_ms / 1000:.2f} s")
    if tokens_per_second:
        parts.append(f"{'~' if estimated else ''}{tokens_per_second:.0f} tok/s")
    if output_tokens is not None:
        cached = f", {cached_input_tokens} cached" if cached_input_tokens else ""
        inputs = f" ({input_tokens} in{cached})" if input_tokens else ""
        parts.append(f"{'~' if estimated else ''}{output_tokens} tokens{inputs}")
    return " · ".join(parts)


def reply_bubbles(
    *,
    text: str,
    reasoning: str,
    label: str,
    finished: bool,
    finish_reason: FinishReason | str | None,
    error: str | None,
    ttft_ms: float | None,
    tokens_per_second: float | None,
    output_tokens: int | None,
    input_tokens: int | None = None,
    tokens_estimated: bool = False,
    cached_input_tokens: int | None = None,
    dropped_messages: int = 0,
    notes: Sequence[str] = (),
    tools: Sequence[Any] = (),
    card: str = "",
) -> list[gr.ChatMessage]:
    """The assistant bubbles for one reply: reasoning and tool calls (collapsible), the answer, then a metrics line.

    `card` (markdown, core/repro.py) is the metrics line's folded content: the reply's reproducibility card, shown
    when the line is opened. The line stays a titled bubble, so it is never sent as context (to_messages).
    """
    bubbles: list[gr.ChatMessage] = []
    if reasoning:
        status: Literal["pending", "done"] = "done" if (text or finished or tools) else "pending"
        bubbles.append(gr.ChatMessage(role="assistant", content=reasoning, metadata={"title": REASONING_TITLE, "status": status}))
    bubbles.extend(tool_bubble(t) for t in tools)
    if text:
        bubbles.append(gr.ChatMessage(role="assistant", content=text))
    reason = finish_reason.value if isinstance(finish_reason, FinishReason) else finish_reason
    if error:
        bubbles.append(gr.ChatMessage(role="assistant", content=error, metadata={"title": NOTICE_PREFIX + notice_title(error), "status": "done"}))
    elif reason == FinishReason.CANCELLED.value:
        bubbles.append(_note("⏹ Stopped. The reply so far is kept."))
    elif reason == FinishReason.LENGTH.value:
        bubbles.append(_note("✂️ The reply reached the token limit (max tokens in the sidebar)."))
    elif reason == FinishReason.CONTENT_FILTER.value:
        bubbles.append(_note("🛡️ The provider stopped this reply for safety reasons."))
    elif reason == FinishReason.INTERRUPTED.value:
        bubbles.append(_note("⚠️ This reply was interrupted when the server stopped. Press Retry to run it again."))
    for note in notes:
        bubbles.append(_note(note))
    if finished:
        line = format_metrics(
            label=label, ttft_ms=ttft_ms, tokens_per_second=tokens_per_second,
            output_tokens=output_tokens, input_tokens=input_tokens, estimated=tokens_estimated,
            cached_input_tokens=cached_input_tokens,
        )
        if dropped_messages:
            line += f" · {dropped_messages} older messages left out to fit the context"
        bubbles.append(gr.ChatMessage(role="assistant", content=card, metadata={"title": line, "status": "done"}))
    elif not text and not reasoning and not tools:
        bubbles.append(gr.ChatMessage(role="assistant", content="", metadata={"title": f"{label} is thinking…", "status": "pending"}))
    return bubbles


def tool_bubble(record: Any) -> gr.ChatMessage:
    """A collapsible block for one tool call: name, arguments, result or error, duration, status."""
    name = _field(record, "name") or "tool"
    status = _field(record, "status") or "done"
    error = _field(record, "error")
    result = _field(record, "result")
    duration = _field(record, "duration_ms")
    title = f"🛠 {name}"
    if status == "cancelled":
        title += " (stopped)"
    elif error:
        title += " (error)"
    body = [f"**Arguments**\n```json\n{_field(record, 'arguments') or '{}'}\n```"]
    if error:
        body.append(f"**Error**\n```\n{error}\n```")
    elif result is not None:
        body.append(f"**Result**\n```\n{result}\n```")
    metadata: MetadataDict = {"title": title, "status": "pending" if status == "pending" else "done"}
    if duration is not None:
        metadata["duration"] = round(duration / 1000, 3)
    return gr.ChatMessage(role="assistant", content="\n\n".join(body), metadata=metadata)


def refusal_notice(text: str, mark: str, *, title: str | None = None) -> gr.ChatMessage:
    """The notice answering a refused message, marked so the message is never sent as context.

    `title`: what the folded notice says (default: from `text`), e.g. the reason and its advice without
    the longer how-to-undo line that `text` ends with."""
    # The title is what shows while the notice is folded: it says at once that nothing was sent.
    title = NOTICE_PREFIX + ("Not sent: " if mark == REFUSED_MARK else "") + notice_title(title or text)
    return gr.ChatMessage(role="assistant", content=text, metadata={"title": title, "status": "done", "id": refusal_id(mark)})


def _note(text: str) -> gr.ChatMessage:
    # A note's first paragraph is its folded title; the rest (e.g. core.summaries' summary) shows when opened.
    title, _, body = text.partition("\n\n")
    return gr.ChatMessage(role="assistant", content=body, metadata={"title": title, "status": "done"})


def result_bubbles(result: Any, label: str, *, notes: Sequence[str] = (), card: Mapping[str, Any] | None = None) -> list[gr.ChatMessage]:
    """Bubbles for a live or finished turn (a TurnResult, or a tool loop's result); `card`: its reproducibility card."""
    return reply_bubbles(
        text=result.text,
        reasoning=result.reasoning,
        label=label,
        finished=result.done,
        finish_reason=result.finish_reason,
        error=result.error.message if result.error else None,
        ttft_ms=result.ttft_ms,
        tokens_per_second=speed_of(result),
        output_tokens=output_tokens_of(result),
        input_tokens=result.input_tokens,
        tokens_estimated=usage_of(result).estimated,
        cached_input_tokens=usage_of(result).cached_input_tokens,
        dropped_messages=getattr(result, "dropped_messages", 0) or sum(getattr(s, "dropped_messages", 0) for s in getattr(result, "steps", [])[:1]),
        notes=notes,
        tools=getattr(result, "tools", ()),
        card=card_markdown(card) if card else "",
    )


def attachment_parts(refs: Iterable[Any], files: Mapping[str, str]) -> list[dict[str, Any]]:
    """Chatbot parts for a stored message's files: the file where it was written (an image shows as a
    thumbnail, anything else as a chip with its name), or a line naming it when it could not be."""
    parts: list[dict[str, Any]] = []
    for ref in refs:
        name, size, mime = str(_field(ref, "name") or "file"), int(_field(ref, "size") or 0), str(_field(ref, "mime") or "")
        path = files.get(str(_field(ref, "id")))
        if path:
            parts.append({"type": "file", "file": {"path": path, "orig_name": name, "size": size, "mime_type": mime}})
        else:
            parts.append({"type": "text", "text": f"📎 {name} ({format_size(size)}, not available right now)"})
    return parts


def stored_to_chatbot(messages: Iterable[Any], label_for: Any = None, files: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """A Gradio chatbot value from stored messages (rows with role, content, reasoning, metrics).

    `files` maps a stored attachment's id to where it was written for Gradio to serve (ui/files.py).
    """
    value: list[dict[str, Any]] = []
    for m in messages:
        role = _field(m, "role")
        refs = _field(m, "attachments") or ()
        if role == "user" and refs:
            text = _field(m, "content") or ""
            parts = attachment_parts(refs, files or {})
            value.append({"role": "user", "content": [*parts, *([{"type": "text", "text": text}] if text else [])]})
        elif role == "user":
            value.append({"role": "user", "content": _field(m, "content") or ""})
        elif role == "assistant" and str(_field(m, "error") or "").startswith(FLAGGED_ERROR):
            value.append(_as_dict(refusal_notice(_field(m, "content") or "", FLAGGED_MARK)))
        elif role == "assistant":
            provider, model = _field(m, "provider"), _field(m, "model")
            label = label_for(provider, model) if label_for else (f"{provider}:{model}" if provider else "assistant")
            reason = _field(m, "finish_reason")
            ttft = _field(m, "ttft_ms")
            duration = _field(m, "duration_ms")
            out_tokens = _field(m, "output_tokens")
            tps = rate_of(out_tokens, ttft, duration)  # the same definition as the live figure
            bubbles = reply_bubbles(
                text=_field(m, "content") or "",
                reasoning=_field(m, "reasoning") or "",
                label=label,
                finished=reason not in (None, "pending"),
                finish_reason=reason,
                error=_field(m, "error"),
                ttft_ms=ttft,
                tokens_per_second=tps,
                output_tokens=out_tokens,
                input_tokens=_field(m, "input_tokens"),
                tokens_estimated=bool(_field(m, "usage_estimated")),
                cached_input_tokens=_field(m, "cached_input_tokens"),
                tools=_field(m, "tool_calls") or (),
                card=card_markdown(card_of(m)),
            )
            value.extend(_as_dict(b) for b in bubbles)
    return value


def _as_dict(message: gr.ChatMessage) -> dict[str, Any]:
    d: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.metadata:
        d["metadata"] = dict(message.metadata)
    return d
