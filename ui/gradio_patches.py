"""Measured fixes to Gradio 6.31's own costs, applied only to that exact version (`apply_all`).

1. Per-session start-up (`lazy_session_config`).

Each new browser session (and each gradio_client) gets a `SessionState`, whose constructor
builds the config of every block in the app, only so that a session's updated values can be
served for deep links. With Parley's four tabs that is ~15 ms of event-loop time per new
session on these machines: 20 users arriving together waited ~0.3 s for it in a row before
anything else ran. Here each block's config is built when a session first touches that block
(its inputs and outputs: a dozen blocks for a chat turn), and the whole dict only if something
reads all of it (deep links). The result is the dict Gradio would have built, entry by entry.
An entry is copied from one built per block (Gradio builds the same dict for the same block each
time, ~100 µs of `inspect.signature`; a session only ever replaces its `props.value`).

2. An idle queue that polls (`queue_waits_for_work`). Gradio's queue loop sleeps 1 ms and looks
again whenever nothing can start: 1,000 wake-ups a second, 3-4% of a core on these machines for a
server doing nothing, the largest single cost of one user's 4-second reply. The loop now waits
until an event is pushed or a running one ends (the only two things that let it start one), or
50 ms at most. Gradio's own loop still decides everything; only its idle sleep changes. Its
progress loop (100 wake-ups a second) gets the same treatment.

3. A failing import per call (`no_matplotlib_per_call`). Every event Gradio runs is wrapped in a
context manager that imports matplotlib (to switch its backend) on entry and on exit; without
matplotlib installed both imports fail after searching sys.path, ~70 µs per streamed update.
When matplotlib is not installed the wrapper does nothing, which is what it did anyway.

4. A worker-thread round trip per value (`inline_simple_processing`). Gradio runs every input's
`preprocess` and every output's `postprocess` in a worker thread: for `/chat` thirteen inputs
(eight round trips before the handler starts) and one or more per streamed update. For the
built-in components listed in `INLINE_COMPONENTS` these are a few lines of pure Python that hold
the GIL anyway, so the thread buys no concurrency and costs a wake-up, a switch and a call back
into the event loop each time. They now run inline; every other component still gets its thread.
So does the call of an async generator function (the chat's handler), which Gradio also sent to a
thread, one more round trip before each turn's first token: that call only builds the generator.

5. FastAPI apps built to be thrown away (`app_built_at_launch`). Every `gr.Blocks` builds its
FastAPI app (~80 routes, ~0.1 s each) in its constructor (through `queue()`), again on leaving its
`with` block, and again on each `queue()` call; `launch()` then builds the one that serves. With the
ChatInterface nested in Parley's Blocks that is five apps nobody uses, about a sixth of the cold
start. Those builds are now deferred: `blocks.app` builds its app when something reads it first.

6. A scan of every listener and two hashes of the chat per streamed update (`tracked_states_once`,
`states_fingerprinted`, in ui/gradio_patch_states.py).

7. A loop trip per SSE message to ask whether the client is still there (`flag_disconnect_check`, in
ui/gradio_patch_sse.py).

8-10. A traffic summary recomputed after every event for a monitoring page Parley turns off, a thread round
trip per queue request for the login check, and the handler's type hints evaluated again per call
(`analytics_only_when_monitored`, `login_check_inline`, `type_hints_once`, in ui/gradio_patch_queue.py).

11. A task and two loop trips per SSE message (`messages_without_tasks`, in ui/gradio_patch_sse.py).

12. The queue's routes tried after 80 others on every request (`hot_routes_first`, in ui/gradio_patch_queue.py).
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.util
import inspect
import logging
import types
import weakref
from collections.abc import Callable
from typing import Any

import gradio

from ui.gradio_patch_queue import analytics_only_when_monitored, hot_routes_first, login_check_inline, type_hints_once
from ui.gradio_patch_sse import flag_disconnect_check, messages_without_tasks
from ui.gradio_patch_states import states_fingerprinted, tracked_states_once

log = logging.getLogger("parley.patches")

PATCHED_VERSION = "6.31.0"
#: The longest the idle queue loop sleeps before looking again anyway (a safety net: every change
#: that lets it start an event also wakes it).
IDLE_WAIT_MAX = 0.05


def apply_all() -> dict[str, bool]:
    """Apply every patch; returns which are active (none on another Gradio version)."""
    return {
        "lazy_session_config": lazy_session_config(),
        "queue_waits_for_work": queue_waits_for_work(),
        "no_matplotlib_per_call": no_matplotlib_per_call(),
        "inline_simple_processing": inline_simple_processing(),
        "login_check_inline": login_check_inline(_version_ok),  # before app_built_at_launch: see its docstring
        "hot_routes_first": hot_routes_first(_version_ok),  # the same
        "app_built_at_launch": app_built_at_launch(),
        "tracked_states_once": tracked_states_once(_version_ok),
        "states_fingerprinted": states_fingerprinted(_version_ok),
        "flag_disconnect_check": flag_disconnect_check(_version_ok),
        "analytics_only_when_monitored": analytics_only_when_monitored(_version_ok),
        "type_hints_once": type_hints_once(_version_ok),
        "messages_without_tasks": messages_without_tasks(_version_ok),
    }


def _version_ok(name: str) -> bool:
    if gradio.__version__ == PATCHED_VERSION:
        return True
    log.info("gradio %s: the %s patch is for %s only; not applied", gradio.__version__, name, PATCHED_VERSION)
    return False


def lazy_session_config() -> bool:
    """Make SessionState.config_values lazy; returns whether the patch is active."""
    from gradio import state_holder

    # Any: the class is patched at run time, which is what mypy's method-assign check exists to refuse.
    cls: Any = state_holder.SessionState
    if getattr(cls, "_parley_lazy_config", False):
        return True
    if not _version_ok("session-config"):
        return False
    original_init = cls.__init__

    def __init__(self: Any, blocks: Any) -> None:
        # Run Gradio's own constructor with the block list hidden, so the eager dict is empty...
        self.__dict__["_parley_blocks"] = blocks
        self.__dict__["_parley_config"] = None
        original_init(self, _NoBlocks(blocks))

    def _get(self: Any) -> dict[int, dict[str, Any]]:
        config: dict[int, dict[str, Any]] | None = self.__dict__.get("_parley_config")
        if config is None:
            # ...and build it when something reads all of it, exactly as Gradio's constructor
            # would, keeping the entries this session already built and changed.
            blocks = self.__dict__["_parley_blocks"]
            touched = self.__dict__.get("_parley_touched", {})
            config = {
                k: touched[k] if k in touched else _block_config(self.blocks_config, k, v)
                for k, v in self.blocks_config.blocks.items()
                if k in blocks.blocks
            }
            config.update({k: v for k, v in touched.items() if k not in config})
            self.__dict__["_parley_config"] = config
        return config

    def _entries(self: Any) -> dict[int, dict[str, Any]]:
        """The dict to read and write single entries in: the full one if built, else the touched ones."""
        full: dict[int, dict[str, Any]] | None = self.__dict__.get("_parley_config")
        entries: dict[int, dict[str, Any]] = self.__dict__.setdefault("_parley_touched", {}) if full is None else full
        return entries

    def __setitem__(self: Any, key: int, value: Any) -> None:
        from gradio.components import State

        block = self.blocks_config.blocks.get(key)
        if isinstance(block, State):
            self._state_ttl[key] = (block.time_to_live, datetime.datetime.now())
            self.state_data[key] = value
        else:
            self.blocks_config.blocks[key] = value
        if block:
            entries = _entries(self)
            # A State's config leaves out its value, so setting it again (every streamed update
            # of a State output) would rebuild the same entry: built once, as Gradio's would be.
            if not (isinstance(block, State) and key in entries):
                entries[key] = _block_config(self.blocks_config, key, block)

    def _update_config(self: Any, key: int) -> None:
        if self[key] is not None:
            _entries(self)[key] = _block_config(self.blocks_config, key, self[key])

    def _update_value_in_config(self: Any, key: int, value: Any) -> None:
        entries = _entries(self)
        if key not in entries:
            entries[key] = _block_config(self.blocks_config, key, self.blocks_config.blocks[key])
        if "props" in entries[key]:
            entries[key]["props"]["value"] = value

    def _set(self: Any, value: dict[int, dict[str, Any]]) -> None:
        # Gradio's constructor assigns the (empty) eager dict: keep building lazily.
        if value == {} and self.__dict__.get("_parley_config") is None:
            return
        self.__dict__["_parley_config"] = value

    cls.__init__ = __init__
    cls.config_values = property(_get, _set)
    # The same bodies as Gradio 6.31's, writing single entries without building the whole dict.
    cls.__setitem__ = __setitem__
    cls._update_config = _update_config
    cls._update_value_in_config = _update_value_in_config
    cls._parley_lazy_config = True
    return True


#: A block's config as `config_for_block(id, [], block)` builds it, per block object. Blocks are not
#: changed in place once the app runs: an update gives the session a new block, so a new entry here.
_TEMPLATES: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _block_config(blocks_config: Any, key: int, block: Any) -> dict[str, Any]:
    """A fresh copy of the block's config: its own top-level dict and `props` (what sessions change)."""
    try:
        template = _TEMPLATES.get(block)
    except TypeError:  # not weak-referenceable: build it every time, as Gradio does
        fresh: dict[str, Any] = blocks_config.config_for_block(key, [], block)
        return fresh
    if template is None or template.get("id") != key:
        template = blocks_config.config_for_block(key, [], block)
        _TEMPLATES[block] = template
    entry = dict(template)
    if isinstance(entry.get("props"), dict):
        entry["props"] = dict(entry["props"])
    return entry


class _NoBlocks:
    """The Blocks as Gradio's SessionState constructor sees it: same config, no blocks to list."""

    def __init__(self, blocks: Any) -> None:
        self.default_config = blocks.default_config
        self.blocks: dict[int, Any] = {}


# -- 2. the queue loop waits for work ----------------------------------------------------------


class _IdleWait(float):
    """Gradio's `Queue.sleep_when_free` (still 1 ms as a number) carrying its queue's wake-up event.

    `gradio.queueing` sees an `asyncio` whose `sleep` recognises this value and waits for the
    event instead; every other sleep in that module is the real one.
    """

    event: asyncio.Event | None = None

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()


async def _sleep(delay: float, result: Any = None) -> Any:
    if not isinstance(delay, _IdleWait):
        return await asyncio.sleep(delay, result)
    if delay.event is None:
        delay.event = asyncio.Event()  # created on the queue's own loop, at its first idle moment
    try:
        await asyncio.wait_for(delay.event.wait(), IDLE_WAIT_MAX)
    except TimeoutError:
        pass
    # Cleared before the loop looks again, so a wake-up that comes after this look is not lost.
    delay.event.clear()
    return result


def queue_waits_for_work() -> bool:
    """Make Gradio's queue loop sleep until there is work instead of polling every 1 ms."""
    from gradio import queueing

    cls: Any = queueing.Queue  # Any: patched at run time (see lazy_session_config)
    if getattr(cls, "_parley_waits_for_work", False):
        return True
    if not _version_ok("idle-queue"):
        return False
    original_init, original_push, original_process = cls.__init__, cls.push, cls.process_events

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.sleep_when_free = _IdleWait(self.sleep_when_free)
        # The loop that sends gr.Progress updates polls every 10 ms, jobs or not; it now looks when
        # woken or every 50 ms (Parley uses no gr.Progress; an app that does sees 20 updates/s).
        self.progress_update_sleep_when_free = _IdleWait(self.progress_update_sleep_when_free)

    async def push(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original_push(self, *args, **kwargs)
        finally:  # a new event to start
            _wake(self)

    async def process_events(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await original_process(self, *args, **kwargs)
        finally:  # a free slot (concurrency limits, batches)
            _wake(self)

    # Any: module attributes set at run time (a module object has no declared `sleep` to assign).
    module: Any = types.ModuleType("asyncio")
    module.__dict__.update(asyncio.__dict__)
    module.sleep = _sleep
    patched: Any = queueing
    patched.asyncio = module
    cls.__init__ = __init__
    cls.push = push
    cls.process_events = process_events
    cls._parley_waits_for_work = True
    return True


def _wake(queue: Any) -> None:
    for name in ("sleep_when_free", "progress_update_sleep_when_free"):
        idle = getattr(queue, name, None)
        if isinstance(idle, _IdleWait):
            idle.wake()


# -- 3. no failing matplotlib import per call --------------------------------------------------


class _NoBackendSwitch:
    """What Gradio's `MatplotlibBackendMananger` does when matplotlib is not installed: nothing."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def no_matplotlib_per_call() -> bool:
    from gradio import utils as gradio_utils

    utils: Any = gradio_utils  # Any: its class is replaced at run time
    if utils.MatplotlibBackendMananger is _NoBackendSwitch:
        return True
    if not _version_ok("matplotlib") or importlib.util.find_spec("matplotlib") is not None:
        return False
    utils.MatplotlibBackendMananger = _NoBackendSwitch
    return True


# -- 4. simple pre/postprocessing inline ------------------------------------------------------

#: Built-in components whose preprocess/postprocess are pure Python with no I/O for Parley's values
#: (text, numbers, choices, JSON, text chat messages). Checked by exact type: a subclass may do more.
# State passes its value through both ways; MultimodalTextbox maps uploads to their paths, checking file types by
# name only (mimetypes, no file read): the chat's four non-listed inputs, four thread round trips a turn until listed.
INLINE_COMPONENTS = ("Textbox", "Number", "Slider", "Checkbox", "Radio", "Dropdown", "JSON", "Markdown", "HTML",
                     "Chatbot", "State", "MultimodalTextbox")


def _inline_types() -> tuple[type, ...]:
    from gradio import components

    return tuple(getattr(components, name) for name in INLINE_COMPONENTS)


def inline_simple_processing() -> bool:
    """Run the listed components' preprocess/postprocess on the event loop instead of a worker thread."""
    from gradio import blocks as gradio_blocks

    blocks: Any = gradio_blocks  # Any: module attributes replaced at run time
    if getattr(blocks, "_parley_inline_processing", False):
        return True
    if not _version_ok("inline-processing"):
        return False
    import anyio
    import anyio.to_thread

    inline = frozenset(_inline_types())
    real_run_sync = anyio.to_thread.run_sync

    async def run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        owner = getattr(func, "__self__", None)
        if type(owner) in inline and getattr(func, "__name__", "") in ("preprocess", "postprocess"):
            return func(*args)
        if inspect.isasyncgenfunction(func):
            # Gradio sends every function that is not a coroutine function to a thread, an async generator
            # function (the chat's handler) too, where calling it only builds the generator: none of its code runs.
            return func(*args)
        return await real_run_sync(func, *args, **kwargs)

    to_thread: Any = types.ModuleType("anyio.to_thread")
    to_thread.__dict__.update(anyio.to_thread.__dict__)
    to_thread.run_sync = run_sync
    module: Any = types.ModuleType("anyio")
    module.__dict__.update(anyio.__dict__)
    module.to_thread = to_thread
    blocks.anyio = module
    blocks._parley_inline_processing = True
    return True


# -- 5. no FastAPI app built before launch() needs one -----------------------------------------

_PENDING = object()  # `blocks.app` until something reads it


def app_built_at_launch() -> bool:
    """Defer the FastAPI apps that Blocks' constructor, `__exit__` and `queue()` build until one is read."""
    from gradio import blocks, routes

    cls: Any = blocks.Blocks  # Any: patched at run time (see lazy_session_config)
    app_cls: Any = routes.App
    if getattr(cls, "_parley_lazy_app", False):
        return True
    if not _version_ok("lazy-app"):
        return False
    real_create = app_cls.create_app
    original_exit, original_queue = cls.__exit__, cls.queue

    def create_app(app_blocks: Any, *args: Any, **kwargs: Any) -> Any:
        # Exactly the call that __exit__ and queue() make, and only while they run.
        if app_blocks.__dict__.get("_parley_defer_app") and not args and kwargs == {"mcp_server": False}:
            return _PENDING
        return real_create(app_blocks, *args, **kwargs)

    create_app.__dict__.update(real_create.__dict__)  # the other create_app patches' marks

    def _deferring(method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            self.__dict__["_parley_defer_app"] = True
            try:
                return method(self, *args, **kwargs)
            finally:
                self.__dict__.pop("_parley_defer_app", None)

        wrapped: Any = wrapper  # Any: __wrapped__ is not a declared attribute of a function
        wrapped.__name__, wrapped.__doc__, wrapped.__wrapped__ = method.__name__, method.__doc__, method
        return wrapper

    def _get(self: Any) -> Any:
        app = self.__dict__.get("_parley_app")
        if app is None:
            raise AttributeError("app")  # as before: no app until queue(), __exit__ or launch()
        if app is _PENDING:
            app = self.__dict__["_parley_app"] = real_create(self, mcp_server=False)
        return app

    def _set(self: Any, value: Any) -> None:
        self.__dict__["_parley_app"] = value

    app_cls.create_app = staticmethod(create_app)
    cls.__exit__ = _deferring(original_exit)
    cls.queue = _deferring(original_queue)
    cls.app = property(_get, _set)
    cls._parley_lazy_app = True
    return True
