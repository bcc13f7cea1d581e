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
SNIFF_BYTES = 64
#: Sessions whose chosen model is remembered (the validator sees only the box, not the sidebar).
SESSIONS = 50_000


class TextOrFiles(MultimodalData):
    """The box's value: `{"text", "files"}`, or a plain string (what `/chat` callers have always sent)."""

    @model_validator(mode="before")
    @classmethod
    def _plain_text(cls, value: Any) -> Any:
        return {"text": value, "files": []} if isinstance(value, str) else value


def chat_box(**kwargs: Any) -> gr.MultimodalTextbox:
    """The chat's box: several files a message, by the 📎 button, drag and drop, or paste.

    Its API takes a plain string message too: the value is read with `TextOrFiles` (an instance
    attribute: a Component subclass would make Gradio write a .pyi stub beside this module).
    """
    box = gr.MultimodalTextbox(file_types=FILE_TYPES, file_count="multiple", sources=["upload"], **kwargs)
    box.data_model = TextOrFiles
    return box


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
                head = fh.read(SNIFF_BYTES)
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


#: For launch(head=...): each file chip in the chat shows its size next to its type ("PDF · 240 KB").
#: Gradio's chip has the name and type only; the size comes from a HEAD request to the file's own URL
#: (the guard answers it for the caller who sees the chip), written to a data attribute that CSS shows,
#: so that Gradio's redraws (which rewrite the chip's text) never wipe it.
CHIP_SIZES = """<script>
(() => {
  const fmt = (n) => {
    if (n < 1024) return n === 1 ? "1 byte" : `${n} bytes`;
    let v = n / 1024, unit = "KB";
    if (v >= 1024) { v /= 1024; unit = "MB"; }
    return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${unit}`;
  };
  const sizes = new Map();
  const annotate = () => {
    document.querySelectorAll("#chatbot a[data-testid='chatbot-file']").forEach((a) => {
      const type = a.closest(".file-info")?.querySelector(".file-type");
      const url = a.getAttribute("href");
      if (!type || !url || type.dataset.sizeFor === url) return;
      type.dataset.sizeFor = url;
      const known = sizes.get(url);
      const show = (size) => { if (type.dataset.sizeFor === url) type.dataset.size = size; };
      if (known) { known.then(show); return; }
      const size = fetch(url, { method: "HEAD", credentials: "same-origin" })
        .then((r) => (r.ok && r.headers.get("content-length") !== null ? fmt(Number(r.headers.get("content-length"))) : ""));
      sizes.set(url, size);
      size.then(show).catch(() => sizes.delete(url));
    });
  };
  let queued = false;
  new MutationObserver(() => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; annotate(); });
  }).observe(document.documentElement, { childList: true, subtree: true });
})();
</script>"""
