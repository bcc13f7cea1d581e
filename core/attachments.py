"""The file rules of a message: the limits (from the app's settings), reading uploads off the event loop,
which model may be sent which file, and the conversion to and from the store's shapes.

Every surface (the chat tab, `/chat`, compare, batch, import) goes through here: the bytes are read
and checked by chat.attachments (magic numbers, decoding, re-encoding) in a worker thread, never on
the event loop; a refusal is a `FileProblem` whose message names the file and the limit, and nothing
is charged, sent or saved for it. Only a message that has files pays for any of this: the plain text
turn never calls into this module.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from chat import offload
from chat.attachments import AttachmentError, Limits, ingest, ingest_files
from chat.types import Attachment, Message, ModelInfo
from compare.engine import file_refusal, sent_as_text, unreadable
from core.config import MIB, AppConfig
from core.services import Services
from core.store import history_files
from storage.attachments import AttachmentIn
from storage.errors import StorageError
from storage.models import AttachmentData

log = logging.getLogger("parley.attachments")

__all__ = [
    "FileProblem",
    "check_import",
    "file_refusal",
    "from_store",
    "history_context",
    "limits_of",
    "message_files",
    "read_files",
    "read_uploads",
    "stored_bytes",
    "text_notes",
    "to_store",
    "with_history",
]


class FileProblem(ValueError):
    """Files that cannot be sent: `message` names the file and the limit or the reason, for the user."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def limits_of(config: AppConfig) -> Limits:
    """chat.attachments' limits with the deployment's settings (MAX_FILE_MB, MAX_ATTACHMENTS_MB, MAX_FILES, MAX_PDF_PAGES)."""
    return Limits(max_file_bytes=config.max_file_bytes, max_message_bytes=config.max_attachments_bytes,
                  max_files=config.max_files, max_pdf_pages=config.max_pdf_pages)


def _mb(n: int) -> str:
    return f"{n / MIB:.1f} MB"


def upload_path(file: str | os.PathLike[str]) -> Path:
    """An upload's path (Gradio hands over its cached copy, named as the user's file)."""
    if not isinstance(file, (str, os.PathLike)) or not str(file):
        raise FileProblem("A file could not be read (no path was given); attach it again.")
    return Path(file)


def read_files(files: Sequence[str | os.PathLike[str]], limits: Limits) -> list[Attachment]:
    """Read and check uploads (blocking: run it in a thread, as `read_uploads` does); FileProblem when refused.

    Count and sizes are checked from the file system before a byte is read, so a huge upload is
    refused without being loaded; then chat.attachments.ingest_files sniffs, decodes and cleans each.
    """
    paths = [upload_path(f) for f in files]
    if len(paths) > limits.max_files:
        raise FileProblem(f"This message has {len(paths)} files; a message takes at most {limits.max_files}. "
                          "Remove some and send again.")
    sizes: list[int] = []
    for path in paths:
        try:
            size = path.stat().st_size
        except OSError as e:
            raise FileProblem(f"{path.name} could not be read ({e.strerror or e}); attach it again.") from e
        if size > limits.max_file_bytes:
            raise FileProblem(f"{path.name} is {_mb(size)}; a file may be at most {_mb(limits.max_file_bytes)}.")
        sizes.append(size)
    if sum(sizes) > limits.max_message_bytes:
        raise FileProblem(f"These files are {_mb(sum(sizes))} together; a message takes at most "
                          f"{_mb(limits.max_message_bytes)} of files.")
    named: list[tuple[str, bytes]] = []
    for path in paths:
        try:
            named.append((path.name, path.read_bytes()))
        except OSError as e:
            raise FileProblem(f"{path.name} could not be read ({e.strerror or e}); attach it again.") from e
    try:
        # Decoding and re-encoding hold the GIL: in a worker process they cannot slow the streams.
        return offload.run(ingest_files, named, limits)
    except AttachmentError as e:
        raise FileProblem(e.message) from e
    except offload.OffloadError as e:
        raise FileProblem(f"{', '.join(p.name for p in paths)}: {e} Try a smaller file.") from e


async def message_files(services: Services, info: ModelInfo,
                        files: Sequence[str | os.PathLike[str]]) -> tuple[list[Attachment], list[str]]:
    """A new message's uploads, read and checked off the event loop, and whether `info`'s model can read them.

    Returns the attachments and the notes to show (a PDF sent as its text); FileProblem names the
    file and the limit, or the configured models that can read it.
    """
    attachments = await read_uploads(files, limits_of(services.config))
    refusal = file_refusal(info, attachments, services.registry)
    if refusal:
        raise FileProblem(refusal)
    return attachments, text_notes(info, attachments)


async def history_context(services: Services, owner: str, conversation_id: str, shown: list[str],
                          context: Sequence[Message], info: ModelInfo) -> tuple[Sequence[Message], list[str]]:
    """The chat's context with its earlier user messages' stored files on them, and notes.

    One storage call, made only when the chat says its earlier turns had files. If the files cannot
    be loaded, the reply goes ahead with the text context and a note says so.
    """
    try:
        stored = await services.db(history_files, owner=owner, conversation_id=conversation_id, history_user_texts=shown)
    except StorageError as e:
        log.info("could not load the files of earlier turns: %s", e)
        return context, ["📎 The files of earlier messages could not be loaded (the database is unavailable): "
                         "this reply sees their text only."]
    if not stored:
        return context, []
    return with_history(context, stored, info)


async def read_uploads(files: Sequence[str | os.PathLike[str]], limits: Limits) -> list[Attachment]:
    """`read_files` in a worker thread: decoding a 10 MB image must not hold up other users' streams."""
    if not files:
        return []
    return await asyncio.to_thread(read_files, list(files), limits)


def text_notes(info: ModelInfo, attachments: Sequence[Attachment]) -> list[str]:
    """A note per PDF that goes to the model as its extracted text (the model takes no PDF files)."""
    return [f"📄 {a.name} went to {info.ref} as its extracted text (this model does not read PDF files)."
            for a in sent_as_text(info, attachments)]


# -- the store's shapes (storage cannot import chat) -------------------------------------------------


def to_store(att: Attachment) -> AttachmentIn:
    """A checked attachment as storage saves it."""
    return AttachmentIn(name=att.name, mime=att.mime, sha256=att.sha256, size=att.size, width=att.width,
                        height=att.height, pages=att.pages, text=att.text, data=att.data)


def from_store(d: AttachmentData) -> Attachment:
    """A stored attachment as a message carries it (already checked when it was saved)."""
    return Attachment(name=d.name, mime=d.mime, data=d.data, sha256=d.sha256, size=d.size, width=d.width,
                      height=d.height, pages=d.pages, text=d.text, id=str(d.id))


def with_history(context: Sequence[Message], files: Sequence[Sequence[AttachmentData]],
                 info: ModelInfo) -> tuple[list[Message], list[str]]:
    """The chat's context with each earlier user message's stored files put back on it, in order.

    `files[i]` are the files of the i-th user message. A file the chosen model cannot read (the
    chat switched to a model without vision) is left out, with a note, rather than refusing every
    later turn of the conversation.
    """
    out: list[Message] = []
    notes: list[str] = []
    turn = 0
    for m in context:
        if m.role == "user":
            stored = [from_store(d) for d in files[turn]] if turn < len(files) else []
            turn += 1
            if stored:
                left_out = unreadable(info, stored)
                if left_out:
                    notes.append(f"📎 {', '.join(a.name for a in left_out)} (earlier in this chat) "
                                 f"{'was' if len(left_out) == 1 else 'were'} left out: {info.ref} cannot read "
                                 f"{'it' if len(left_out) == 1 else 'them'}.")
                kept = tuple(a for a in stored if a not in left_out)
                if kept:
                    m = m.model_copy(update={"attachments": kept})
        out.append(m)
    return out, notes


def check_import(limits: Limits) -> Callable[[str, bytes], AttachmentIn]:
    """The check a conversation import runs on each file's bytes: chat's ingest, with this deployment's limits."""

    def check(name: str, data: bytes) -> AttachmentIn:
        try:
            return to_store(offload.run(ingest, name, data, limits))
        except AttachmentError as e:
            raise FileProblem(e.message) from e
        except offload.OffloadError as e:
            raise FileProblem(f"{name}: {e}") from e

    return check



async def stored_bytes(services: Services, owner: str, ids: Sequence[str]) -> dict[str, bytes]:
    """The bytes of these stored attachments, for drawing them (one worker hop for all of them).

    Only the owner's own files are found: an id that is someone else's, unknown, malformed, or in an
    unvoted blind comparison is left out (logged), and its bubble names the file instead.
    """
    from storage.attachments import get_attachment

    def load(session: Any) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for aid in ids:
            try:
                out[aid] = get_attachment(session=session, owner=owner, attachment_id=aid).data
            except StorageError as e:
                log.info("attachment %s not shown: %s", aid, e)
        return out

    if not ids:
        return {}
    try:
        return await services.db(load)
    except StorageError as e:
        log.info("attachments not shown: %s", e)
        return {}
