"""File URLs that answer only the caller they were made for (`FileGuard`), and stored attachments
written where Gradio serves them (`AttachmentFiles`).

Gradio 6.31 serves every file in its upload folder (GRADIO_TEMP_DIR, default /tmp/gradio) at
`/gradio_api/file=<path>` to anyone who has the URL, and an upload's path is a hash of its bytes:
a shared screen or a log line is enough to read someone's chart or PDF. `FileGuard` keeps a table
of which caller (ui/session_guard.py's `caller_of`: the login, else the browser cookie, else the
client address) may fetch which file of that folder, and answers 404 to everyone else:

- an upload (`POST /gradio_api/upload`) is granted to the caller who uploaded it;
- a file in an event's output (a chat bubble's image, an export, a reopened conversation's
  attachment) is granted to the caller whose event stream or response carries it: Gradio marks
  every output file as `{"path": ..., "meta": {"_type": "gradio.FileData"}}`, so the guard reads
  the outgoing JSON or server-sent events for that mark (a cheap byte search first; only a message
  that has it is parsed);
- a request that names a file of that folder as an input (a history, a message's files) must be
  the file's caller too: otherwise Bob, knowing Alice's upload path, could send it to a model as
  his own attachment (Gradio only checks that the file is in its upload folder) and have the reply
  hand it back to him. It gets a 403 and reaches no handler.

Files outside the upload folder are Gradio's business (its own allow and block lists). The table is
in the process, bounded (LRU) like the session table; an entry that falls out of it answers 404 to
everyone until its owner is shown it again (reopening the conversation grants it anew). Replicas are
sticky per browser, and Gradio's upload folder is per machine anyway.

Limits: an output value that a handler builds from user-supplied JSON could carry the mark; Parley
has no such output (no gr.JSON), and the input check refuses a path the caller was never given. A
streamed diff that replaces only a file's path (not the whole file value) is granted when the final
message resends the full value, which Gradio always does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.attachments import stored_bytes
from ui.session_guard import _BODY_ROUTES, API, ASGIApp, Caller, Message, Receive, Scope, Send, _read_body, _relative_path, _replay, caller_of

log = logging.getLogger("parley.files")

#: Marks a file value in Gradio's JSON (FileData.meta._type): the byte string the guard looks for.
MARKER = b"gradio.FileData"
#: ~300 bytes an entry: 100,000 files is about 30 MB.
DEFAULT_CAPACITY = 100_000
NOT_FOUND = b'{"detail":"Not found"}'
NOT_YOURS = b'{"detail":"A file in this request was not uploaded or shown to you: attach it again."}'
ATTACHMENTS = "parley-attachments"
#: A reopened conversation's files stay on disk this long (seconds) after they were last written.
ATTACHMENT_LIFETIME = 24 * 3600.0
_SAFE_NAME = re.compile(r"[^\w.()\[\] +-]+")


def upload_folder() -> Path:
    """Gradio's upload and cache folder (GRADIO_TEMP_DIR, default /tmp/gradio), resolved."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder()).resolve()


def in_upload_folder(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a file in Gradio's upload folder (where every upload, and nothing of the server's, is)."""
    try:
        return Path(file_key(path)).is_relative_to(upload_folder())
    except (OSError, ValueError):
        return False


def file_key(path: str | os.PathLike[str]) -> str:
    """The one spelling of a file path the table uses: absolute, with `..` and symlinks resolved."""
    return str(Path(os.path.abspath(os.fspath(path))).resolve())


class FileGrants:
    """file path -> the principals that may fetch it; LRU-bounded."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._grants: OrderedDict[str, set[str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._grants)

    def grant(self, path: str | os.PathLike[str], principal: str) -> None:
        key = file_key(path)
        holders = self._grants.get(key)
        if holders is None:
            self._grants[key] = {principal}
            while len(self._grants) > self.capacity:
                self._grants.popitem(last=False)
        else:
            holders.add(principal)
            self._grants.move_to_end(key)

    def allows(self, path: str | os.PathLike[str], caller: Caller) -> bool:
        key = file_key(path)
        holders = self._grants.get(key)
        if holders is None or not any(caller.owns(p) for p in holders):
            return False
        self._grants.move_to_end(key)
        return True


class FileGuard:
    """ASGI middleware: a file of Gradio's upload folder answers only the callers it was given to."""

    def __init__(self, app: ASGIApp, grants: FileGrants | None = None, root: Path | None = None) -> None:
        self.app = app
        self.grants = grants if grants is not None else FileGrants()
        self.root = root if root is not None else upload_folder()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = _relative_path(scope)
        if not path.startswith(API):
            return await self.app(scope, receive, send)
        route, method = path[len(API):], scope["method"]
        if route.startswith(("file=", "file/")):
            if method in ("GET", "HEAD") and not self._may_fetch(route[5:], caller_of(scope)):
                return await _answer(send, 404, NOT_FOUND)
            return await self.app(scope, receive, send)
        if route.startswith(("proxy=", "stream/")):
            return await self.app(scope, receive, send)
        caller = caller_of(scope)
        if method == "POST" and route.rstrip("/") == "upload":
            return await self.app(scope, receive, _granting(send, self.grants, caller, uploads=True))
        if method == "POST" and _BODY_ROUTES.match(route):
            body = await _read_body(receive)
            if not self._may_use(body, caller):
                return await _answer(send, 403, NOT_YOURS)
            receive = _replay(body, receive)
        await self.app(scope, receive, _granting(send, self.grants, caller))

    def inside(self, path: str) -> bool:
        """Whether `path` is in the guarded folder (a path that cannot be read as one counts as inside)."""
        try:
            return Path(file_key(path)).is_relative_to(self.root)
        except (OSError, ValueError):
            return True

    def _may_fetch(self, path: str, caller: Caller) -> bool:
        if path.startswith(("http://", "https://")):
            return True  # Gradio's SSRF-safe proxy: nothing of ours
        return not self.inside(path) or self.grants.allows(path, caller)

    def _may_use(self, body: bytes, caller: Caller) -> bool:
        """Every file of the guarded folder a request body names must have been given to its caller."""
        if b'"path"' not in body:
            return True
        try:
            data = json.loads(body)
        except ValueError:
            return True  # not JSON (a form): Gradio reads no file paths from it
        return all(not self.inside(p) or self.grants.allows(p, caller) for p in _named_paths(data))


def _named_paths(value: Any) -> Iterator[str]:
    """Every `"path": "<text>"` in a JSON value, at any depth (Gradio reads a file value by its path)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "path" and isinstance(v, str):
                yield v
            else:
                yield from _named_paths(v)
    elif isinstance(value, list):
        for v in value:
            yield from _named_paths(v)


def _output_files(value: Any) -> Iterator[str]:
    """The paths of the file values (FileData) in a JSON value Gradio sends out."""
    if isinstance(value, dict):
        meta = value.get("meta")
        path = value.get("path")
        if isinstance(path, str) and isinstance(meta, dict) and meta.get("_type") == "gradio.FileData":
            yield path
        for v in value.values():
            yield from _output_files(v)
    elif isinstance(value, list):
        for v in value:
            yield from _output_files(v)


def _granting(send: Send, grants: FileGrants, caller: Caller, *, uploads: bool = False) -> Send:
    """Grant the caller each file a response hands it, before the bytes that name it leave."""
    mode: str | None = None
    tail = b""
    held: list[bytes] = []

    def grant_json(raw: bytes) -> None:
        try:
            data = json.loads(raw)
        except ValueError:
            return
        if uploads:
            paths: Any = [p for p in data if isinstance(p, str)] if isinstance(data, list) else []
        else:
            paths = _output_files(data)
        for p in paths:
            grants.grant(p, caller.principal)

    async def sender(message: Message) -> None:
        nonlocal mode, tail
        if message["type"] == "http.response.start":
            ctype = dict(message.get("headers", ())).get(b"content-type", b"")
            ok = message.get("status", 200) < 400
            if ok and ctype.startswith(b"text/event-stream"):
                mode = "sse"
            elif ok and ctype.startswith(b"application/json"):
                mode = "json"
        elif message["type"] == "http.response.body" and mode is not None:
            body: bytes = message.get("body", b"")
            if mode == "sse":
                data = tail + body if tail else body
                cut = data.rfind(b"\n\n")
                complete, tail = (data[:cut], data[cut + 2:]) if cut >= 0 else (b"", data)
                if MARKER in complete:
                    for line in complete.split(b"\n"):
                        if line.startswith(b"data:") and MARKER in line:
                            grant_json(line[5:])
            else:
                held.append(body)
                if not message.get("more_body", False):
                    whole = b"".join(held)
                    held.clear()
                    if uploads or MARKER in whole:
                        grant_json(whole)
        await send(message)

    return sender


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def middleware(grants: FileGrants | None = None) -> Any:
    """The entry for `launch(app_kwargs={"middleware": [...]})`."""
    from starlette.middleware import Middleware

    return Middleware(FileGuard, grants=grants)


# -- stored attachments, where Gradio serves them -------------------------------------------------------


def safe_name(name: str) -> str:
    """A file name safe on any file system, keeping what a user recognises (the store already cleaned it)."""
    cleaned = _SAFE_NAME.sub("_", name).strip(" .") or "file"
    return cleaned[:150]


class AttachmentFiles:
    """Writes a stored attachment's bytes inside Gradio's upload folder, where Gradio serves them in place.

    One folder per (owner, attachment), named by a keyed hash (the name says nothing about either and
    cannot be computed outside this process); the file keeps the name it was sent with. The guard
    decides who may fetch it: these folders are only where the bytes live while a chat shows them.
    Files are swept once they were last written `lifetime` seconds ago.
    """

    def __init__(self, root: Path | None = None, *, lifetime: float = ATTACHMENT_LIFETIME) -> None:
        self.root = (root if root is not None else upload_folder() / ATTACHMENTS).resolve()
        self.lifetime = lifetime
        self._key = secrets.token_bytes(32)
        self._swept = 0.0

    def path_for(self, owner: str, attachment_id: str, name: str) -> Path:
        digest = hmac.new(self._key, f"{owner}\0{attachment_id}".encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]
        return self.root / digest / safe_name(name)

    def has(self, owner: str, attachment_id: str, name: str) -> Path | None:
        """The file, when it is already written (then nothing needs to be read from the store)."""
        path = self.path_for(owner, attachment_id, name)
        try:
            os.utime(path)  # in use again: the sweep keeps it
        except OSError:
            return None
        return path

    def write(self, owner: str, attachment_id: str, name: str, data: bytes) -> Path:
        """The attachment as a file (blocking: call it in a thread)."""
        self._sweep()
        path = self.path_for(owner, attachment_id, name)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = path.with_name(f".{secrets.token_hex(8)}.part")
        staging.write_bytes(data)
        os.replace(staging, path)  # a concurrent reader never sees half a file
        return path

    def _sweep(self) -> None:
        now = time.time()
        if now - self._swept < min(self.lifetime, 3600.0):
            return
        self._swept = now
        try:
            folders = list(self.root.iterdir())
        except OSError:
            return
        for folder in folders:
            try:
                files = list(folder.iterdir())
                for f in files:
                    if now - f.stat().st_mtime > self.lifetime:
                        f.unlink()
                if not any(folder.iterdir()):
                    folder.rmdir()
            except OSError as e:  # another replica on this machine swept it first
                log.debug("attachment sweep: %s", e)


def attachment_files_for(services: Any) -> AttachmentFiles:
    """The app's writer of stored attachments, made on first use."""
    store = getattr(services, "attachment_files", None)
    if store is None:
        store = AttachmentFiles()
        services.attachment_files = store
    return store


async def shown_files(services: Any, owner: str, messages: Any) -> dict[str, str]:
    """Each stored attachment of these messages written where Gradio serves it: attachment id -> path.

    Only files not already on disk are read from the store (one worker hop for all of them). A file
    that cannot be read is left out: its bubble names it instead (ui/convert.py).
    """
    refs = [(str(ref.id), ref.name) for m in messages for ref in (getattr(m, "attachments", None) or ())]
    if not refs:
        return {}
    store = attachment_files_for(services)
    found: dict[str, str] = {}
    missing: list[tuple[str, str]] = []
    for aid, name in refs:
        path = store.has(owner, aid, name)
        if path is None:
            missing.append((aid, name))
        else:
            found[aid] = str(path)
    if missing:
        data = await stored_bytes(services, owner, [aid for aid, _ in missing])

        def write() -> dict[str, str]:  # files of megabytes: off the event loop
            return {aid: str(store.write(owner, aid, name, data[aid])) for aid, name in missing if aid in data}

        found.update(await asyncio.to_thread(write))
    return found
