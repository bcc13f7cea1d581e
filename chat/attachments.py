"""Files in messages: type sniffing, limits, cleaning, labels, and each provider's token formula.

`ingest` turns uploaded bytes into an `Attachment` or raises `AttachmentError` with a sentence for
the user. The type comes from the bytes (magic numbers), never from the name or the browser.
Images are decoded and re-encoded without metadata (chat.images), PDFs are counted and their
text read with bounded work (chat.pdf), text files are decoded as UTF-8. Everything here is
synchronous and CPU-bound: async callers run it with `asyncio.to_thread`.
"""

from __future__ import annotations

import codecs
import hashlib
import math
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from chat.tokens import estimate_tokens
from chat.types import IMAGE_MIMES, PDF_MIME, TEXT_MIME, Attachment

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """What one upload may be. Defaults follow the providers' documented limits (README, "Attachments")."""

    max_file_bytes: int = 20 * MiB  # OpenAI's per-image limit; Anthropic's per-request limit is 32 MB
    max_message_bytes: int = 50 * MiB  # OpenAI's per-request total for images
    max_files: int = 10
    max_pdf_pages: int = 100  # Anthropic's PDF page limit
    max_text_chars: int = 200_000  # a text file's length (about 50,000 tokens); also caps a PDF's extracted text
    max_image_side: int = 8000  # Anthropic refuses larger sides; bigger images are scaled down to this
    #: Decompression-bomb guard: a header claiming more pixels than this is refused before decoding.
    max_image_pixels: int = 50_000_000
    #: Pixels over all frames of an animation (a small GIF can unpack to thousands of frames).
    max_animation_pixels: int = 200_000_000
    max_frames: int = 1000


class AttachmentError(ValueError):
    """A file that cannot be attached; `message` is a sentence for the user naming the file and the limit."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


# -- names and sizes -------------------------------------------------------------------------------

MAX_NAME_CHARS = 200
_PATH_SEPARATORS = re.compile(r"[/\\]")


def clean_name(name: str) -> str:
    """The base name only, without control, format (bidi override) or path characters, at most 200 characters."""
    base = _PATH_SEPARATORS.split(name or "")[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp")).strip()
    if base in ("", ".", ".."):
        return "file"
    if len(base) > MAX_NAME_CHARS:
        stem, dot, ext = base.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            base = stem[: MAX_NAME_CHARS - len(ext) - 1] + "." + ext
        else:
            base = base[:MAX_NAME_CHARS]
    return base


def format_size(size: int) -> str:
    """240 KB, 1.2 MB, 512 bytes (binary units, one decimal under ten)."""
    if size < 1024:
        return f"{size} byte" if size == 1 else f"{size} bytes"
    value, unit = size / 1024, "KB"
    if value >= 1024:
        value, unit = value / 1024, "MB"
    return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"


# -- type sniffing ---------------------------------------------------------------------------------

_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# C0 controls that text files do not contain (tab, newline, form feed, carriage return and escape do).
_BINARY_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f]")


def decode_text(data: bytes, *, final: bool = True) -> str | None:
    """The text of UTF-8 bytes (a BOM is dropped) or of UTF-16 with a BOM; None for anything else.

    Bytes with NULs are binary. With final=False the bytes may be the head of a file, cut inside a
    character (sniffing a prefix). UTF-16 (Windows "Unicode" text, Excel's Unicode CSV) needs its
    BOM, and is refused if it decodes to control characters: that is binary data, not text.
    """
    if data.startswith(_UTF16_BOMS):
        try:
            text = codecs.getincrementaldecoder("utf-16")().decode(data, final=final)
        except UnicodeDecodeError:
            return None
        return None if _BINARY_CONTROLS.search(text) else text
    if b"\x00" in data:
        return None
    try:
        return codecs.getincrementaldecoder("utf-8-sig")().decode(data, final=final)
    except UnicodeDecodeError:
        return None


def sniff(data: bytes) -> str | None:
    """The type of `data` from its leading bytes: an image type, PDF_MIME, TEXT_MIME for text, else None.

    Text is UTF-8 without NULs (or UTF-16 with a BOM); `data` may be just the file's head.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"%PDF-"):
        return PDF_MIME
    if data and decode_text(data, final=False) is not None:
        return TEXT_MIME
    return None


_KIND_LABEL = {"image/png": "PNG image", "image/jpeg": "JPEG image", "image/webp": "WebP image",
               "image/gif": "GIF image", PDF_MIME: "PDF", TEXT_MIME: "text"}

ACCEPTED = "PNG, JPEG, WebP and GIF images, PDFs, and UTF-8 text files such as .txt, .md, .csv, .json or code"


# -- ingest ----------------------------------------------------------------------------------------


def _refuse(name: str, reason: str) -> AttachmentError:
    return AttachmentError(f"{name} {reason}.")


def ingest(name: str, data: bytes, limits: Limits = Limits()) -> Attachment:
    """Check and clean one uploaded file; raises AttachmentError with a message naming the file and the limit."""
    name = clean_name(name)
    if not data:
        raise _refuse(name, "is empty (0 bytes)")
    if len(data) > limits.max_file_bytes:
        raise _refuse(name, f"is {format_size(len(data))}; the limit is {format_size(limits.max_file_bytes)} per file")
    mime = sniff(data)
    if mime is None:
        raise _refuse(name, f"is not a file type Parley can attach: it takes {ACCEPTED}, and reads the type from "
                            "the file's contents, not its name")
    # Pillow and pypdf load here, not at import: chat.context imports this module for the token formulas.
    from chat import images, pdf

    if mime in IMAGE_MIMES:
        try:
            image = images.clean_image(data, mime, max_side=limits.max_image_side, max_pixels=limits.max_image_pixels,
                                max_animation_pixels=limits.max_animation_pixels, max_frames=limits.max_frames)
        except images.ImageRefused as e:
            raise _refuse(name, str(e)) from e
        return _make(name, mime, image.data, width=image.width, height=image.height)
    if mime == PDF_MIME:
        try:
            info = pdf.read_pdf(data, max_pages=limits.max_pdf_pages, max_text_chars=limits.max_text_chars)
        except pdf.PdfRefused as e:
            raise _refuse(name, str(e)) from e
        return _make(name, mime, data, pages=info.pages, text=info.text)
    text = decode_text(data)
    if text is None:  # sniff allows a head cut inside a character; the whole file must decode
        raise _refuse(name, "is not valid text (it ends inside a character)")
    if len(text) > limits.max_text_chars:
        raise _refuse(name, f"has {len(text):,} characters of text; the limit is {limits.max_text_chars:,}")
    return _make(name, TEXT_MIME, text.encode("utf-8"), text=text)


def _make(name: str, mime: str, data: bytes, **fields: object) -> Attachment:
    return Attachment.model_validate(
        {"name": name, "mime": mime, "data": data, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
         **fields}
    )


def ingest_files(files: Sequence[tuple[str, bytes]], limits: Limits = Limits()) -> list[Attachment]:
    """Check the count and total size first (nothing is decoded if they fail), then ingest each file in order."""
    if len(files) > limits.max_files:
        raise AttachmentError(f"{len(files)} files are attached; the limit is {limits.max_files} files per message.")
    total = sum(len(data) for _, data in files)
    if total > limits.max_message_bytes:
        raise AttachmentError(
            f"The files come to {format_size(total)} together; the limit is "
            f"{format_size(limits.max_message_bytes)} per message."
        )
    return [ingest(name, data, limits) for name, data in files]


# -- provider-specific scaling ---------------------------------------------------------------------


def scaled_size(width: int, height: int, max_side: int | None, max_pixels: int | None = None) -> tuple[int, int]:
    """The size after scaling down (never up) so the long side is at most `max_side` and the area at most `max_pixels`."""
    scale = 1.0
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
    if max_pixels and width * height * scale * scale > max_pixels:
        scale = min(scale, math.sqrt(max_pixels / (width * height)))
    if scale >= 1.0:
        return width, height
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


_FitKey = tuple[str, str, int, int | None]
_Fitted = tuple[bytes, str, int, int]  # data, sha256, width, height


class _FitCache:
    """Scaled copies kept for reuse, bounded by total bytes, least recently used first out (thread-safe)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[_FitKey, _Fitted] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: _FitKey) -> _Fitted | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: _FitKey, value: _Fitted) -> None:
        size = len(value[0])
        with self._lock:
            if key in self._items or size > self.max_bytes:
                return
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (old, *_) = self._items.popitem(last=False)
                self._bytes -= len(old)


#: A few large images' worth: a compare run sends one image to every pane, a retry sends it again.
_fit_cache = _FitCache(64 * MiB)


def fit_image(att: Attachment, max_long_edge: int, max_pixels: int | None = None) -> Attachment:
    """`att` scaled down to fit (long edge, and area when given), re-encoded; unchanged when it already fits.

    Memoised on (content hash, limits): retries, compare panes and later turns reuse the result.
    """
    if att.kind != "image" or att.width is None or att.height is None:
        return att
    size = scaled_size(att.width, att.height, max_long_edge, max_pixels)
    if size == (att.width, att.height):
        return att
    key = (att.sha256, att.mime, max_long_edge, max_pixels)
    hit = _fit_cache.get(key)
    if hit is None:
        from chat import images, offload  # Pillow loads on first use (see ingest)

        # In a worker process: scaling holds the GIL, which would slow every stream of this one.
        data = offload.run(images.rescale_image, att.data, att.mime, size)
        hit = (data, hashlib.sha256(data).hexdigest(), size[0], size[1])
        _fit_cache.put(key, hit)
    data, digest, width, height = hit
    return att.model_copy(update={"data": data, "sha256": digest, "size": len(data), "width": width,
                                  "height": height})


# -- labels ----------------------------------------------------------------------------------------


def describe(att: Attachment) -> str:
    """One line about a file: "chart.png (PNG image, 1200×800 px, 240 KB)", "paper.pdf (PDF, 12 pages, 1.2 MB)"."""
    parts = [_KIND_LABEL.get(att.mime, att.mime)]
    if att.width is not None and att.height is not None:
        parts.append(f"{att.width}×{att.height} px")
    if att.pages is not None:
        parts.append("1 page" if att.pages == 1 else f"{att.pages:,} pages")
    parts.append(format_size(att.size))
    return f"{att.name} ({', '.join(parts)})"


_BACKTICKS = re.compile(r"`+")
_LANG = re.compile(r"[^A-Za-z0-9_+#-]")


def text_block(att: Attachment) -> str:
    """A text file (or a PDF's extracted text) as a labelled fenced block the model can tell apart from the prompt."""
    if att.kind == "pdf":
        label = f"File: {att.name} (text extracted from the PDF)"
        body = att.text or "(no text could be extracted: the PDF may be a scan)"
        lang = ""
    else:
        label = f"File: {att.name}"
        body = att.text if att.text is not None else att.data.decode("utf-8", "replace")
        stem, dot, ext = att.name.rpartition(".")
        lang = _LANG.sub("", ext)[:20] if dot and stem else ""
    # The fence is longer than any backtick run inside, so the file's own fences cannot close it.
    longest = max((len(m) for m in _BACKTICKS.findall(body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{label}\n{fence}{lang}\n{body}\n{fence}"


# -- token formulas (README "Attachments": each provider's documented formula) --------------------

#: A PDF page rendered as the image a provider reads: US Letter at 96 dpi.
PAGE_PX = (816, 1056)


def openai_image_tokens(width: int, height: int) -> int:
    """OpenAI `detail: high`: fit in 2048×2048, short side down to 768, then 85 + 170 per 512-px tile."""
    w, h = scaled_size(width, height, 2048)
    if min(w, h) > 768:
        scale = 768 / min(w, h)
        w, h = math.floor(w * scale), math.floor(h * scale)
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def anthropic_image_tokens(width: int, height: int) -> int:
    """Anthropic: w·h/750, after scaling down to a 1568-px long edge and about 1,600 tokens (1.2 megapixels)."""
    w, h = scaled_size(width, height, 1568, 1600 * 750)
    return math.ceil(w * h / 750)


def gemini_image_tokens(width: int, height: int) -> int:
    """Gemini: 258 when both sides are at most 384 px, else 258 per 768×768 tile."""
    if width <= 384 and height <= 384:
        return 258
    return 258 * math.ceil(width / 768) * math.ceil(height / 768)


def _text_tokens(text: str) -> int:
    return estimate_tokens(text)  # a Chinese or Japanese file is not a quarter of its characters


def attachment_tokens(att: Attachment, provider: str) -> int:
    """The context tokens `att` costs on `provider` ("openai", "anthropic", "gemini"; others use OpenAI's rule)."""
    if att.kind == "text":
        return _text_tokens(text_block(att))
    image_tokens = {"anthropic": anthropic_image_tokens, "gemini": gemini_image_tokens}.get(
        provider, openai_image_tokens
    )
    if att.kind == "image":
        return image_tokens(att.width or 1, att.height or 1)
    pages = att.pages or 1
    if provider == "gemini":
        return 258 * pages  # Gemini reads each page as one image
    # OpenAI and Anthropic read each page as an image plus its extracted text.
    return pages * image_tokens(*PAGE_PX) + _text_tokens(att.text or "")
