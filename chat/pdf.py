"""PDF checks with pypdf: page count without walking a huge page tree, and bounded text extraction.

Only chat.attachments calls this; it turns `PdfRefused` into a message that names the file.
The bytes are kept as uploaded (providers that read PDFs get the file itself).
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass

from pypdf import PdfReader, apply_configuration
from pypdf.errors import LimitReachedError
from pypdf.generic import DictionaryObject

log = logging.getLogger(__name__)

#: Text extraction stops after this long and keeps what it has (a hostile content stream can be slow
#: to parse; the page and size limits bound the rest). It is a budget, not a check: the PDF is accepted.
TEXT_TIME_BUDGET_S = 10.0
#: pypdf's per-stream decompression cap here (its default is 75 MB): a page's text never needs more.
_STREAM_OUTPUT_CAP = 32_000_000


class PdfRefused(ValueError):
    """The PDF cannot be used; the text completes a sentence that starts with the file's name."""


@dataclass(frozen=True, slots=True)
class PdfInfo:
    pages: int
    text: str | None


def _declared_pages(reader: PdfReader) -> int | None:
    """The page count the document states (/Root /Pages /Count): read in O(1), may lie."""
    try:
        pages = reader.root_object["/Pages"].get_object()
        count = pages["/Count"] if isinstance(pages, DictionaryObject) else None
    except Exception:  # noqa: BLE001 - a damaged catalogue: the bounded walk below decides
        return None
    return int(count) if isinstance(count, int) else None


def _too_many(pages: int | None, limit: int) -> PdfRefused:
    counted = f"{pages:,}" if pages is not None else f"more than {limit:,}"
    return PdfRefused(f"has {counted} pages; the limit is {limit:,} pages")


def read_pdf(data: bytes, *, max_pages: int, max_text_chars: int) -> PdfInfo:
    """Page count and text of a PDF, refused when encrypted, unreadable, empty or over `max_pages`.

    A PDF bomb (a tiny file naming 100,000 pages) is refused from its declared /Count before any
    page is visited; a document whose /Count lies is stopped by pypdf's page-tree entry limit,
    set here to a few times `max_pages`, so the walk is bounded either way.
    """
    # Leaves plus the /Pages nodes above them: a real tree of max_pages pages has far fewer entries.
    entries = 4 * max_pages + 64
    with apply_configuration(
        page_tree_maximum_entries=entries,
        zlib_maximum_output_length=_STREAM_OUTPUT_CAP,
        lzw_maximum_output_length=_STREAM_OUTPUT_CAP,
        run_length_maximum_output_length=_STREAM_OUTPUT_CAP,
        brotli_maximum_output_length=_STREAM_OUTPUT_CAP,
    ):
        try:
            reader = PdfReader(io.BytesIO(data), strict=False)
            encrypted = reader.is_encrypted
        except Exception as e:  # noqa: BLE001 - any parser failure on untrusted bytes means "unreadable"
            raise PdfRefused("could not be read as a PDF (the file is damaged)") from e
        if encrypted:
            # Providers refuse encrypted PDFs, and text cannot be read from a locked one.
            raise PdfRefused("is password-protected or encrypted; save an unprotected copy and attach that")
        declared = _declared_pages(reader)
        if declared is not None and declared > max_pages:
            raise _too_many(declared, max_pages)
        try:
            pages = len(reader.pages)
        except LimitReachedError as e:
            raise _too_many(None, max_pages) from e
        except Exception as e:  # noqa: BLE001 - a broken page tree
            raise PdfRefused("could not be read as a PDF (its page list is damaged)") from e
        if pages > max_pages:
            raise _too_many(pages, max_pages)
        if pages == 0:
            raise PdfRefused("has no pages")
        return PdfInfo(pages=pages, text=_extract_text(reader, pages, max_text_chars))


def _extract_text(reader: PdfReader, pages: int, max_chars: int) -> str | None:
    """The document's text, page by page, up to `max_chars` characters; None when it has none (a scan)."""
    parts: list[str] = []
    total = 0
    deadline = time.monotonic() + TEXT_TIME_BUDGET_S
    for index in range(pages):
        if total >= max_chars or time.monotonic() > deadline:
            log.info("PDF text extraction stopped at page %d of %d", index, pages)
            break
        try:
            text = reader.pages[index].extract_text() or ""
        except Exception:  # noqa: BLE001 - a page whose text cannot be read is skipped, the rest still counts
            log.debug("PDF page %d: no text", index + 1, exc_info=True)
            continue
        # NULs and lone surrogates (from broken font maps) are refused by databases and JSON encoders.
        text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8").strip()
        if text:
            parts.append(text)
            total += len(text)
    joined = "\n\n".join(parts)[:max_chars]
    return joined or None
