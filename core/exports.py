"""Export files (conversations, comparisons, batch results): short-lived, unguessable, their owner's only.

Written under a root folder the UI chooses (ui/exports.py: inside Gradio's cache, where Gradio serves
them in place instead of copying them into a lasting cache entry), as

    <root>/<owner dir>/<created>-<random token>/<file name>

- the random token makes the URL unguessable;
- each file is deleted once `lifetime` has passed (a timer per file, a sweep at start-up and at each
  new export, for files a previous process left behind);
- `may_download` refuses a file in a logged-in owner's folder (`u-<keyed hash of the owner>`) to any
  other user (ui/exports.py's `ExportGuard` asks it on every file URL). Anonymous owners (`a-...`)
  cannot be told apart by the request, so for them the token and the short life are the protection.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("parley.exports")

#: Seconds an export file can be downloaded before it is deleted.
EXPORT_LIFETIME = 600.0
FOLDER = "parley-exports"
_TOKEN_DIR = re.compile(r"(\d{1,12})-[A-Za-z0-9_-]{16,}")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


def _proven_owner(owner: str) -> bool:
    """Owners a request can prove again when it downloads (a login name or a Hugging Face profile)."""
    return owner.startswith(("user:", "hf:"))


class ExportFiles:
    """Writes export files where Gradio serves them in place, and deletes them after `lifetime` seconds."""

    def __init__(self, root: Path, *, lifetime: float = EXPORT_LIFETIME,
                 clock: Callable[[], float] = time.time, timers: bool = True):
        self.root = root.resolve()
        self.lifetime = lifetime
        self.clock = clock
        self.timers = timers
        # Keyed so that a folder name says nothing about its owner and cannot be computed by anyone else.
        self._key = secrets.token_bytes(32)
        self.sweep()  # whatever an earlier process left behind and is past its lifetime
        self._schedule()

    # -- writing --------------------------------------------------------------------------------

    def owner_dir(self, owner: str) -> str:
        digest = hmac.new(self._key, owner.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]
        return ("u-" if _proven_owner(owner) else "a-") + digest

    def _new_folder(self, owner: str) -> Path:
        self.sweep()
        folder = self.root / self.owner_dir(owner) / f"{int(self.clock())}-{secrets.token_urlsafe(18)}"
        folder.mkdir(mode=0o700, parents=True)
        self._schedule()
        return folder

    def write(self, owner: str, name: str, text: str) -> Path:
        """A new export file holding `text`; its path is what the download component is given."""
        path = self._new_folder(owner) / safe_name(name)
        path.write_text(text, encoding="utf-8")
        return path

    def copy(self, owner: str, source: Path, name: str | None = None) -> Path:
        """A new export file with the contents of `source` (batch results written elsewhere)."""
        path = self._new_folder(owner) / safe_name(name or source.name)
        shutil.copyfile(source, path)
        return path

    # -- expiry ---------------------------------------------------------------------------------

    def _schedule(self) -> None:
        """Sweep again once the newest file's lifetime is over, so nothing outlives it by much."""
        if not self.timers:
            return
        timer = threading.Timer(self.lifetime + 1, self.sweep)
        timer.daemon = True
        timer.start()

    def sweep(self) -> int:
        """Delete every export older than `lifetime`; returns how many folders were removed."""
        if not self.root.is_dir():
            return 0
        now = self.clock()
        removed = 0
        for owner_folder in self._children(self.root):
            for folder in self._children(owner_folder):
                if now - self._created(folder) >= self.lifetime:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
            try:
                owner_folder.rmdir()  # only when empty
            except OSError:
                pass
        return removed

    @staticmethod
    def _children(folder: Path) -> list[Path]:
        try:
            return [p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()]
        except OSError:
            return []

    def _created(self, folder: Path) -> float:
        match = _TOKEN_DIR.fullmatch(folder.name)
        if match:
            return float(match.group(1))
        try:  # not one of ours: judged by its age on disk
            return folder.stat().st_mtime
        except OSError:
            return 0.0

    # -- downloads ------------------------------------------------------------------------------

    def may_download(self, path: str, requester: str | None) -> bool:
        """False for a file in a logged-in owner's folder when `requester` is someone else (or no one)."""
        try:
            resolved = Path(os.path.realpath(path))  # `..` and links resolved, as Gradio serves it
            relative = resolved.relative_to(self.root)
        except ValueError:
            return True  # not an export: Gradio's own rules apply
        if not relative.parts:
            return False
        owner_folder = relative.parts[0]
        if owner_folder.startswith("a-"):
            return True
        return requester is not None and hmac.compare_digest(owner_folder, self.owner_dir(requester))


def safe_name(name: str) -> str:
    """A download's file name: letters, digits, dot, dash, underscore; never a path."""
    stem = _SAFE_NAME.sub("", name).strip().replace(" ", "-").lstrip(".")[:80]
    return stem or "export"
