"""7. A disconnect check that reads uvicorn's flag instead of awaiting a cancelled receive (`flag_disconnect_check`).

Gradio's queue stream (`/gradio_api/queue/data`) asks `request.is_disconnected()` before every message it sends.
Starlette answers by awaiting the ASGI `receive()` inside an already cancelled anyio scope: a cancel scope to
build and enter, and a trip through the event loop for the cancellation to land, per message. Under a burst
every trip waits for a whole loop iteration (30-150 ms with 100 streams), so each SSE message left later than it
could; the checks themselves were 2-4% of the loop's time (bench/README.md, "Issue 20"). uvicorn's request
cycle keeps the answer in two flags, which its own `receive()` reads to decide the same thing: when the request
came straight from uvicorn, the flags are read; any other `receive` (a middleware's, another server's) gets
Starlette's own check. Part of `ui.gradio_patches.apply_all` (PARLEY_GRADIO_PATCHES=off turns it off).
"""

from __future__ import annotations

from typing import Any

# uvicorn's two HTTP/1.1 protocols (httptools and h11) each have a RequestResponseCycle with these flags.
_CYCLE_MODULES = ("uvicorn.protocols.http.httptools_impl", "uvicorn.protocols.http.h11_impl")


def uvicorn_cycle(receive: Any) -> Any | None:
    """The uvicorn request cycle `receive` is the bound method of, or None."""
    owner = getattr(receive, "__self__", None)
    cls = type(owner)
    if cls.__name__ == "RequestResponseCycle" and cls.__module__ in _CYCLE_MODULES and hasattr(owner, "disconnected"):
        return owner
    return None


def flag_disconnect_check(version_ok: Any) -> bool:
    """Patch `starlette.requests.Request.is_disconnected`; `version_ok(name)` is gradio_patches' version check."""
    from starlette.requests import Request

    cls: Any = Request
    if getattr(cls.is_disconnected, "_parley_flag", False):
        return True
    if not version_ok("disconnect-check"):
        return False
    original = cls.is_disconnected

    async def is_disconnected(self: Any) -> bool:
        cycle = uvicorn_cycle(self._receive)
        if cycle is None:
            return bool(await original(self))
        # What uvicorn's receive() would answer: "http.disconnect" once either is set.
        if cycle.disconnected or cycle.response_complete:
            self._is_disconnected = True
        return bool(self._is_disconnected)

    is_disconnected._parley_flag = True  # type: ignore[attr-defined]  # marks the patch as applied
    is_disconnected._parley_original = original  # type: ignore[attr-defined]  # the tests compare with it
    cls.is_disconnected = is_disconnected
    return True
