"""The chat's message box: a multimodal textbox that also takes a plain string (`ChatBox`), and the
browser's check of a message before it leaves the box (`validator`): a message refused there stays
in the box, text and files, for the user to fix (the turn's own checks in core run again for every caller).

Only what is cheap and certain is checked here: the text (empty, too long), the number and sizes of
the files (from the file system), and whether the chosen model reads images at all (from each
file's first bytes). Whether a PDF without text can go to a model that takes no PDFs needs its
text, which core reads when the message is sent, with the decoding and cleaning of every file.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.components.multimodal_textbox import MultimodalData
from pydantic import model_validator

from chat.attachments import format_size, sniff
from chat.errors import ChatError
from chat.types import IMAGE_MIMES, PDF_MIME, Attachment
from compare.engine import file_refusal
from core.services import Services
from ui.convert import content_text, message_files

#: What the box takes (Gradio checks the names; core reads the real type from the bytes).
FILE_TYPES = ["image", ".pdf", ".txt", ".md", ".markdown", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml", ".toml", ".xml",
              ".html", ".css", ".py", ".js", ".ts", ".tsx", ".jsx", ".java", ".c", ".h", ".cpp", ".hpp", ".cs", ".go", ".rs",
              ".rb", ".php", ".sh", ".sql", ".r", ".kt", ".swift", ".scala", ".lua", ".ini", ".cfg", ".log", ".tex", ".rst"]
#: Bytes read from each file to tell its kind (magic numbers are in the first few).
HEAD = 64
#: Sessions whose chosen model is remembered (the validator sees only the box, not the sidebar).
SESSIONS = 50_000


class TextOrFiles(MultimodalData):
    """The box's value: `{"text", "files"}`, or a plain string (what `/chat` callers have always sent)."""

    @model_validator(mode="before")
    @classmethod
    def _plain_text(cls, value: Any) -> Any:
        return {"text": value, "files": []} if isinstance(value, str) else value


class ChatBox(gr.MultimodalTextbox):
    """gr.MultimodalTextbox whose API also takes a plain string message (the browser draws it as the original)."""

    data_model = TextOrFiles
    is_template = True  # Gradio's mark for a subclass drawn by its parent's frontend component


def chat_box(**kwargs: Any) -> ChatBox:
    """The chat's box: several files a message, by the 📎 button, drag and drop, or paste."""
    return ChatBox(file_types=FILE_TYPES, file_count="multiple", sources=["upload"], **kwargs)


class ModelChoices:
    """The model each browser session has picked, so that the box's check knows which model it is for."""

    def __init__(self, default: str, capacity: int = SESSIONS) -> None:
        self.default = default
        self.capacity = capacity
        self._chosen: OrderedDict[str, str] = OrderedDict()

    def note(self, session: str | None, model: str | None) -> None:
        if not session or not isinstance(model, str):
            return
        self._chosen[session] = model
        self._chosen.move_to_end(session)
        while len(self._chosen) > self.capacity:
            self._chosen.popitem(last=False)

    def of(self, session: str | None) -> str:
        return self._chosen.get(session or "", self.default)


def file_problem(services: Services, files: list[str], model: str) -> str | None:
    """Why these files cannot go with this message to `model`, or None (core checks everything else)."""
    cfg = services.config
    if len(files) > cfg.max_files:
        return f"This message has {len(files)} files; a message takes at most {cfg.max_files}. Remove some and send again."
    heads: list[tuple[str, str | None]] = []
    total = 0
    for f in files:
        path = Path(f)
        try:
            size = path.stat().st_size
            with path.open("rb") as fh:
                head = fh.read(HEAD)
        except OSError:
            return f"{path.name} could not be read; attach it again."
        if size > cfg.max_file_bytes:
            return f"{path.name} is {format_size(size)}; the limit is {format_size(cfg.max_file_bytes)} per file."
        total += size
        heads.append((path.name, sniff(head)))
    if total > cfg.max_attachments_bytes:
        return f"These files are {format_size(total)} together; a message takes at most {format_size(cfg.max_attachments_bytes)} of files."
    try:
        _provider, info = services.registry.resolve(model)
    except ChatError:
        return None  # core names the problem with the model
    # A PDF's text is unknown until core reads it: it is assumed to have some here (core decides).
    kinds = [Attachment(name=name, mime=mime, text="?" if mime == PDF_MIME else None)
             for name, mime in heads if mime in IMAGE_MIMES or mime == PDF_MIME]
    return file_refusal(info, kinds, services.registry) if kinds else None


def check_message(services: Services, message: Any, model: str) -> str | None:
    """Why the box's message cannot be sent as it is, or None."""
    text = content_text(message) if isinstance(message, (str, Mapping)) else ""
    files = message_files(message)
    limit = services.config.max_message_chars
    if not text.strip() and not files:
        return "Type a message first: an empty message is not sent."
    if len(text) > limit:
        return f"Messages are limited to {limit:,} characters; this one has {len(text):,}. Shorten it and send again."
    return file_problem(services, files, model) if files else None


def validator(services: Services, models: ModelChoices) -> Any:
    """The browser's check before a message leaves the box (respond checks again for API callers)."""

    def check(message: Any, request: gr.Request) -> Any:
        problem = check_message(services, message, models.of(getattr(request, "session_hash", None)))
        return gr.validate(problem is None, problem or "")

    return check
