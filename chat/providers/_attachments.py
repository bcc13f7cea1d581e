"""Attachments on their way to a provider (no SDK imports): what each file becomes, scaled and within the request limit.

Every provider adapter asks `prepare` for the items of each user message: a file sent as itself (`Inline`:
an image fitted to the provider's documented size, or a PDF the model reads natively) or as text (`Text`:
a text file, a PDF's extracted text, or a note saying why a file was left out). The adapters only write
the items in their own shape. This is CPU work (Pillow, base64): the adapters run it in a worker thread,
and only for requests that carry files, so text-only requests take exactly the path they took before.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from chat.errors import BadRequest
from chat.types import Attachment, Message, ModelInfo


@dataclass(frozen=True, slots=True)
class Rules:
    """One provider's documented limits for files sent inline."""

    #: Longest image edge the provider reads without scaling it down itself (bigger images cost bytes, not detail).
    image_edge: int
    #: Pixel budget per image, when the provider documents one (Anthropic: about 1.15 megapixels).
    image_pixels: int | None
    #: Largest request the provider takes with files inline, in bytes of base64 on the wire.
    request_bytes: int
    #: Where the limit comes from, for the refusal message.
    limit_name: str


MB = 1_000_000
# OpenAI: "fit within 2048 x 2048" before tiling (images guide); at most 50 MB of images per request.
OPENAI = Rules(2048, None, 50 * MB, "50 MB of files per request")
# Anthropic: images above a 1568-px long edge or ~1,600 tokens (1.2 MP at w·h/750) are scaled down by the API anyway (vision guide);
# a request may be at most 32 MB (PDF support guide).
ANTHROPIC = Rules(1568, 1_200_000, 32 * MB, "32 MB per request")
# Gemini: images are cut into 768-px tiles (258 tokens each): 3072 px caps an image at 16 tiles. Files
# sent inline must keep the whole request under 20 MB (image understanding guide; larger needs the Files API).
GEMINI = Rules(3072, None, 20 * MB, "20 MB per request for files sent inline")


@dataclass(frozen=True, slots=True)
class Inline:
    """A file sent as itself: an image (already fitted) or a PDF the model reads natively."""

    att: Attachment

    def b64(self) -> str:
        return base64.b64encode(self.att.data).decode("ascii")

    def data_url(self) -> str:
        return f"data:{self.att.mime};base64,{self.b64()}"


@dataclass(frozen=True, slots=True)
class Text:
    """A file sent as text: a text file or a PDF's extracted text (fenced and labelled), or a note."""

    text: str


Item = Inline | Text


def has_attachments(messages: Sequence[Message]) -> bool:
    """Whether any message carries a file (a plain loop: this runs on every request)."""
    for m in messages:
        if m.attachments:
            return True
    return False


def _b64_len(n: int) -> int:
    return (n + 2) // 3 * 4


def _note(att: Attachment, why: str) -> Text:
    from chat.attachments import describe

    return Text(f"[{describe(att)} was not sent: {why}.]")


def _as_text(att: Attachment, model: str) -> Text:
    """A PDF the model cannot read as a file: its extracted text, or a note when it has none."""
    from chat.attachments import text_block

    if att.text and att.text.strip():
        return Text(text_block(att))
    return _note(att, f"{model} does not read PDFs and this one has no text layer")


def _item(att: Attachment, info: ModelInfo, rules: Rules) -> Item:
    from chat.attachments import fit_image, text_block

    kind = att.kind
    if kind == "image":
        if not info.vision:  # an image from earlier in the chat, after switching to a text-only model
            return _note(att, f"{info.display} does not read images")
        return Inline(fit_image(att, rules.image_edge, rules.image_pixels))
    if kind == "pdf":
        return Inline(att) if info.pdf else _as_text(att, info.display)
    return Text(text_block(att))


def prepare(messages: Sequence[Message], info: ModelInfo, rules: Rules, label: str) -> dict[int, list[Item]]:
    """The items of each message that has files, keyed by its index in `messages`.

    When the files sent inline exceed the provider's request limit, the oldest messages' files are sent
    as text instead (a PDF as its extracted text, anything else as a note), oldest first; the newest user
    message's files are never changed. If they alone exceed the limit, BadRequest says so: sending would
    only earn an error from the provider, after the user waited for it.
    """
    out = {i: [_item(a, info, rules) for a in m.attachments] for i, m in enumerate(messages) if m.attachments}
    newest = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    used = sum(len(m.content) for m in messages) + sum(_size(item) for items in out.values() for item in items)
    for index in sorted(out):
        if used <= rules.request_bytes:
            break
        if index == newest:
            continue
        items = out[index]
        for k, item in enumerate(items):
            if isinstance(item, Inline):
                replacement = (
                    _as_text(item.att, info.display)
                    if item.att.kind == "pdf"
                    else _note(item.att, f"the files of this chat exceed {label}'s limit of {rules.limit_name}")
                )
                used += _size(replacement) - _size(item)
                items[k] = replacement
    if used > rules.request_bytes:
        mb = used / MB
        raise BadRequest(
            f"The files in this message come to {mb:.1f} MB as sent, over {label}'s limit of "
            f"{rules.limit_name}. Send fewer or smaller files.",
            provider=label,
        )
    return out


def _size(item: Item) -> int:
    return _b64_len(len(item.att.data)) if isinstance(item, Inline) else len(item.text)


def openai_content(text: str, items: Sequence[Item]) -> list[dict[str, object]]:
    """A Chat Completions user content with files: the text part first, then each file in order."""
    parts: list[dict[str, object]] = [{"type": "text", "text": text}] if text else []
    for item in items:
        if isinstance(item, Text):
            parts.append({"type": "text", "text": item.text})
        elif item.att.kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": item.data_url()}})
        else:
            parts.append({"type": "file", "file": {"filename": item.att.name, "file_data": item.data_url()}})
    return parts


def anthropic_blocks(text: str, items: Sequence[Item]) -> list[dict[str, object]]:
    """Messages content blocks with files: the files first (Anthropic's guidance: images before text), then the text."""
    blocks: list[dict[str, object]] = []
    for item in items:
        if isinstance(item, Text):
            blocks.append({"type": "text", "text": item.text})
        elif item.att.kind == "image":
            blocks.append({"type": "image", "source": {"type": "base64", "media_type": item.att.mime, "data": item.b64()}})
        else:
            blocks.append({
                "type": "document",
                "source": {"type": "base64", "media_type": item.att.mime, "data": item.b64()},
                "title": item.att.name,
            })
    if text.strip():  # the API refuses empty text blocks
        blocks.append({"type": "text", "text": text})
    return blocks
