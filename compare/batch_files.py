"""The files a batch prompt names (`"files": ["chart.png"]`): found, checked and decoded before the run starts.

A prompt's paths are relative to the prompts file's folder (the CLI), or name files uploaded with it
(the Batch tab, where each upload lives in a folder of its own: matched by file name). A path may not
leave the prompts file's folder (absolute paths, `..`, symbolic links that point outside: refused).
Every file is checked by chat.attachments (the chat's own rules: sniffed type, size, pages, decoding)
before anything is charged or sent; one bad file refuses the whole run up front with a message naming
the prompt and the file. A file named by many prompts is read and decoded once. Blocking work: run it
in a thread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath

from chat import offload
from chat.attachments import AttachmentError, Limits, ingest
from chat.types import Attachment
from compare.batch import BatchError, Prompt

MIB = 1024 * 1024
#: Problems listed in one refusal at most (the rest are counted).
SHOWN_PROBLEMS = 5

#: Where a prompt's files are: the prompts file's folder, or uploads by file name.
FileSource = Path | Mapping[str, Path]


def limits_from_env(env: Mapping[str, str] | None = None) -> Limits:
    """The CLI's limits: MAX_FILE_MB, MAX_ATTACHMENTS_MB, MAX_FILES and MAX_PDF_PAGES as the app reads them."""
    env = os.environ if env is None else env
    base = Limits()

    def number(name: str, default: float) -> float:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError as e:
            raise BatchError(f"{name} must be a number, got {raw!r}.") from e
        if not 0 < value < float("inf"):
            raise BatchError(f"{name} must be a positive number, got {raw!r}.")
        return value

    return Limits(
        max_file_bytes=int(number("MAX_FILE_MB", base.max_file_bytes / MIB) * MIB),
        max_message_bytes=int(number("MAX_ATTACHMENTS_MB", base.max_message_bytes / MIB) * MIB),
        max_files=max(int(number("MAX_FILES", base.max_files)), 1),
        max_pdf_pages=max(int(number("MAX_PDF_PAGES", base.max_pdf_pages)), 1),
    )


def _locate(name: str, source: FileSource) -> Path:
    """The file `name` stands for; BatchError's text (without the prompt) when it cannot be used."""
    if not name.strip() or "\x00" in name:
        raise ValueError("a file name is empty")
    if isinstance(source, Mapping):
        base = PurePosixPath(name.replace("\\", "/")).name
        found = source.get(base)
        if found is None:
            raise ValueError(f"{name} was not uploaded with the prompts file (upload it too)")
        return found
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise ValueError(f"{name} is an absolute path; name files relative to the prompts file's folder")
    root = source.resolve()
    path = (root / name).resolve()  # follows symbolic links: one pointing outside is caught below
    if not path.is_relative_to(root):
        raise ValueError(f"{name} is outside the prompts file's folder")
    if not path.is_file():
        raise ValueError(f"{name} was not found next to the prompts file" if not path.exists() else f"{name} is not a file")
    return path


def _ingest(path: Path, name: str, limits: Limits) -> Attachment:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ValueError(f"{name} could not be read ({e.strerror or e})") from e
    if size > limits.max_file_bytes:
        raise ValueError(f"{name} is {size / MIB:.1f} MB; a file may be at most {limits.max_file_bytes / MIB:.1f} MB")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{name} could not be read ({e.strerror or e})") from e
    try:
        # In a worker process (chat/offload.py): decoding holds the GIL.
        return offload.run(ingest, PurePosixPath(name.replace("\\", "/")).name, data, limits)
    except AttachmentError as e:
        raise ValueError(e.message.rstrip(".")) from e
    except offload.OffloadError as e:
        raise ValueError(f"{name}: {str(e).rstrip('.')}") from e


def load_prompt_files(prompts: Sequence[Prompt], source: FileSource, limits: Limits | None = None) -> dict[str, list[Attachment]]:
    """Each prompt's files (by prompt id; prompts without files are left out), or BatchError naming every problem."""
    limits = limits or Limits()
    seen: dict[Path, Attachment | str] = {}
    out: dict[str, list[Attachment]] = {}
    problems: list[str] = []
    for p in prompts:
        if not p.files:
            continue
        if len(p.files) > limits.max_files:
            problems.append(f"prompt '{p.id}': {len(p.files)} files; a prompt takes at most {limits.max_files}")
            continue
        mine: list[Attachment] = []
        for name in p.files:
            try:
                path = _locate(name, source)
                if path not in seen:
                    try:
                        seen[path] = _ingest(path, name, limits)
                    except ValueError as e:
                        seen[path] = str(e)  # one bad file shared by many prompts is reported once per prompt
                got = seen[path]
                if isinstance(got, str):
                    raise ValueError(got)
                mine.append(got)
            except ValueError as e:
                problems.append(f"prompt '{p.id}': {e}")
        total = sum(a.size for a in mine)
        if total > limits.max_message_bytes:
            problems.append(f"prompt '{p.id}': its files are {total / MIB:.1f} MB together; a prompt takes at most "
                            f"{limits.max_message_bytes / MIB:.1f} MB")
        if mine:
            out[p.id] = mine
    if problems:
        more = f" (and {len(problems) - SHOWN_PROBLEMS} more)" if len(problems) > SHOWN_PROBLEMS else ""
        raise BatchError("Nothing was run: " + "; ".join(problems[:SHOWN_PROBLEMS]) + more + ".")
    return out
