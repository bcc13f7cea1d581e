"""Export downloads in Gradio: where the export files live (Gradio's cache) and who may fetch them.

Gradio serves a returned file at `/gradio_api/file=<path>`. A file outside Gradio's cache folder is
first copied into `<cache>/<content hash>/`, where it stays until the process ends (or forever, in
the default /tmp/gradio) and any logged-in user with the URL can fetch it. So exports
(core/exports.py: short-lived, per-owner folders, random tokens) are written inside the cache
folder, under `<cache>/parley-exports/`, where Gradio serves them in place; `ExportGuard` answers 404
to a file URL in a logged-in owner's folder for anyone else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote

from core.exports import FOLDER, ExportFiles


def gradio_cache_folder() -> Path:
    """Where Gradio serves files from without copying them (GRADIO_TEMP_DIR, default /tmp/gradio)."""
    from gradio.utils import get_upload_folder

    return Path(get_upload_folder())


def exports_for(services: Any) -> ExportFiles:
    """The app's export store, made on first use (at start-up, by the sidebar) inside Gradio's cache."""
    store = getattr(services, "exports", None)
    if store is None:
        store = ExportFiles(gradio_cache_folder() / FOLDER)
        services.exports = store
    return store


# -- the download check ---------------------------------------------------------------------------


class ExportGuard:
    """ASGI middleware: a file URL inside an owner's export folder answers 404 to anyone else."""

    def __init__(self, app: Any, services: Any):
        self.app = app
        self.services = services

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            path = _file_path(scope.get("path", ""))
            if path is not None:
                store = exports_for(self.services)
                if not store.may_download(path, await _requester(scope)):
                    await _not_found(send)
                    return
        await self.app(scope, receive, send)


def _file_path(url_path: str) -> str | None:
    """The file a Gradio file URL asks for (`.../file=<path>` or `.../file/<path>`), else None."""
    for marker in ("/file=", "/file/"):
        index = url_path.find(marker)
        if index >= 0:
            return unquote(url_path[index + len(marker):])
    return None


async def _requester(scope: dict[str, Any]) -> str | None:
    """The owner this request can prove: a Gradio login, else a Hugging Face sign-in, else None."""
    from starlette.requests import Request

    request = Request(scope)
    app = scope.get("app")
    username = None
    if app is not None and getattr(app, "auth_dependency", None) is not None:
        username = app.auth_dependency(request)
        if hasattr(username, "__await__"):
            username = await username
    elif app is not None and hasattr(app, "tokens"):
        cookie_id = getattr(app, "cookie_id", "")
        token = request.cookies.get(f"access-token-{cookie_id}") or request.cookies.get(f"access-token-unsecure-{cookie_id}")
        username = app.tokens.get(token)
    if username:
        return f"user:{username}"
    session = scope.get("session") or {}
    info = session.get("oauth_info") if isinstance(session, dict) else None
    hf_name = ((info or {}).get("userinfo") or {}).get("preferred_username")
    return f"hf:{hf_name}" if hf_name else None


async def _not_found(send: Any) -> None:
    body = b'{"detail":"Not found"}'
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def export_guard(services: Any) -> Any:
    """The middleware for demo.launch(app_kwargs={"middleware": [...]}): the export download check."""
    from starlette.middleware import Middleware

    return Middleware(ExportGuard, services=services)
