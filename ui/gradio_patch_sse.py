"""7. A disconnect check that reads uvicorn's flag instead of awaiting a cancelled receive (`flag_disconnect_check`).

Gradio's queue stream (`/gradio_api/queue/data`) asks `request.is_disconnected()` before every message it sends.
Starlette answers by awaiting the ASGI `receive()` inside an already cancelled anyio scope: a cancel scope to
build and enter, and a trip through the event loop for the cancellation to land, per message. Under a burst
every trip waits for a whole loop iteration (30-150 ms with 100 streams), so each SSE message left later than it
could; the checks themselves were 2-4% of the loop's time (bench/README.md, "Issue 20"). uvicorn's request
cycle keeps the answer in two flags, which its own `receive()` reads to decide the same thing: when the request
came straight from uvicorn, the flags are read; any other `receive` (a middleware's, another server's) gets
Starlette's own check.

11. A task per SSE message (`messages_without_tasks`). The same stream waits for each message with
`asyncio.wait_for(messages.get(), timeout=10)`, which on Python 3.11 wraps `get()` in a new Task, arms a timer, and
needs two more trips round the loop (the task's end, then the waiter's) before the stream sees a message that was
already there. The session's message queue is now a `MessageQueue`, whose `get()` hands over a waiting message at
once, and `wait_for` as the queue stream sees it is Python 3.12's (`await` under `asyncio.timeout`), which does the
same without a task: a message already queued costs no loop trip at all, and one that comes later wakes the stream
directly.

Both are part of `ui.gradio_patches.apply_all` (PARLEY_GRADIO_PATCHES=off turns them off).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Generator
from typing import Any, TypeVar

T = TypeVar("T")

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


class Ready:
    """An awaitable that is already done: a message `MessageQueue.get` had at hand."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self.value
        yield  # a generator that never suspends


class MessageQueue(asyncio.Queue[Any]):
    """A session's SSE messages: `get()` is the same coroutine when the queue is empty, a `Ready` when it is not."""

    def get(self) -> Any:  # an awaitable either way, as its callers need
        if self.empty():
            return super().get()
        return Ready(self.get_nowait())


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """`asyncio.wait_for` as Python 3.12 has it (no task around `aw`), and no wait at all for a `Ready`."""
    if isinstance(aw, Ready):
        value: T = aw.value  # whatever the queue held
        return value
    if timeout is None:
        return await aw
    async with asyncio.timeout(timeout):
        return await aw


def messages_without_tasks(version_ok: Any) -> bool:
    """Give Gradio's queue `MessageQueue`s and its routes module this `wait_for` (see the module docstring)."""
    from gradio import queueing
    from gradio import routes as routes_module

    routes: Any = routes_module  # patched at run time: its module globals are what changes
    if getattr(routes.asyncio, "_parley_wait_for", False):
        return True
    if not version_ok("sse-messages"):
        return False
    # routes.py reaches asyncio through its module global: it alone gets a copy of the module with this wait_for.
    view = types.ModuleType("asyncio")
    view.__dict__.update(vars(asyncio))
    view.wait_for = wait_for  # type: ignore[attr-defined]  # a module attribute, set as asyncio has it
    view._parley_wait_for = True  # type: ignore[attr-defined]  # marks the patch as applied
    routes.asyncio = view
    queueing.AsyncQueue = MessageQueue  # type: ignore[attr-defined]  # the name queueing.py builds its queues with
    return True
