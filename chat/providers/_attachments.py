"""Attachments on their way to a provider (no SDK imports): what each file becomes, scaled and within the request limit.

Every provider adapter asks `prepare` for the items of each user message: a file sent as itself (`Inline`:
an image fitted to the provider's documented size, or a PDF the model reads natively) or as text (`Text`:
a text file, a PDF's extracted text, or a note saying why a file was left out). The adapters only write
the items in their own shape. This is CPU work (Pillow, base64): the adapters run it in a worker thread,
and only for requests that carry files, so text-only requests take exactly the path they took before.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

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
# Gemini: images are cut into 768-px tiles (258 tokens each); the same 2048-px edge as OpenAI, so a comparison
# shows both the same pixels. Files sent inline must keep the whole request under 20 MB (image understanding
# guide; larger needs the Files API).
GEMINI = Rules(2048, None, 20 * MB, "20 MB per request for files sent inline")

#: Bytes per base64 call. A C call holds the GIL for its whole length and the event loop's thread waits for
#: it: 768 KiB takes a millisecond or two, where one call over 10 MB (or one join of its base64) stalled
#: every stream for tens of milliseconds.
_CHUNK = 3 * 256 * 1024


@dataclass(frozen=True, slots=True)
class Blob:
    """A file's base64 (after `prefix`, e.g. "data:image/png;base64,") in a request body being built.

    It stays bytes until the body is written: `dumps` streams it in short pieces, `materialize` makes
    it the plain string the SDKs and tests see.
    """

    data: bytes
    prefix: str = ""

    def pieces(self) -> Iterator[bytes]:
        view = memoryview(self.data)
        for i in range(0, len(view), _CHUNK):
            yield base64.b64encode(view[i : i + _CHUNK])

    def text(self) -> str:
        return self.prefix + base64.b64encode(self.data).decode("ascii")


def materialize(body: Any) -> Any:
    """`body` with every Blob written out as its string: the request as the SDK takes it."""
    if isinstance(body, Blob):
        return body.text()
    if isinstance(body, dict):
        return {k: materialize(v) for k, v in body.items()}
    if isinstance(body, list):
        return [materialize(v) for v in body]
    return body


def dumps(body: Any) -> list[bytes]:
    """`body` as compact UTF-8 JSON (the SDKs' own settings), in pieces: no piece holds more than one
    base64 chunk, so neither writing nor sending it makes one long GIL-holding call.

    Each Blob is replaced by a random placeholder, the rest is dumped by json, and each blob (base64:
    nothing to escape) is written in its place chunk by chunk.
    """
    nonce = secrets.token_hex(12)
    blobs: list[Blob] = []

    def swap(value: Any) -> Any:
        if isinstance(value, Blob):
            blobs.append(value)
            return f"{nonce}{len(blobs) - 1}"
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return value

    text = json.dumps(swap(body), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    out: list[bytes] = []
    for k, piece in enumerate(re.split(f'"{nonce}(\\d+)"', text)):
        if k % 2:
            blob = blobs[int(piece)]
            out.append(b'"' + blob.prefix.encode())
            out.extend(blob.pieces())
            out.append(b'"')
        elif piece:
            out.append(piece.encode())
    return out


def sending(pieces: list[bytes]) -> tuple[AsyncIterator[bytes], dict[str, str]]:
    """A body in pieces as an SDK's `post(content=...)` streams it, with the Content-Length that keeps it
    one plain request (httpx would otherwise send an iterator with chunked transfer encoding). Handed to
    the socket in one piece, 13 MB went into asyncio's write buffer in one copy of ~50 ms on the loop."""

    async def each() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    return each(), {"Content-Length": str(sum(len(p) for p in pieces))}


@dataclass(frozen=True, slots=True)
class Inline:
    """A file sent as itself: an image (already fitted) or a PDF the model reads natively."""

    att: Attachment

    def b64(self) -> Blob:
        return Blob(self.att.data)

    def data_url(self) -> Blob:
        return Blob(self.att.data, f"data:{self.att.mime};base64,")


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


def prepared_items(messages: Sequence[Message], info: ModelInfo | None, rules: Rules, label: str,
                   provider: str) -> dict[int, list[Item]]:
    """`prepare` for one request: nothing at all when no message has files (the plain path stays as it was).

    Without `info` (the module-level converters called alone), the model is taken to read images and PDFs.
    """
    if not has_attachments(messages):
        return {}
    return prepare(messages, info or ModelInfo(provider=provider, id="", vision=True, pdf=True), rules, label)


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
