"""The Gradio patches: the lazy session config gives the dict Gradio would build; the idle queue waits
instead of polling and still starts every event; the matplotlib wrapper is a no-op without matplotlib;
the listed components are pre/postprocessed inline, the others in a worker thread; Blocks build their
FastAPI app only when it is needed; the watched states are Gradio's own; the SSE disconnect check reads
uvicorn's flags and still sees a client leave."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import threading
import time
from copy import copy
from typing import Any

import gradio as gr
from gradio import queueing
from gradio.state_holder import SessionState

from ui import gradio_patches
from ui.gradio_patches import lazy_session_config


def test_lazy_session_config_matches_gradios_own(fake_server, tmp_path):
    assert lazy_session_config()
    from tests.apphelpers import app_env, in_process_app

    with in_process_app(app_env(fake_server, f"sqlite:///{tmp_path / 'p.db'}")) as (_, services):
        demo = services.demo
        state = SessionState(demo)
        assert state.__dict__.get("_parley_config") is None, "nothing is built for a new session"
        fresh = copy(demo.default_config)
        expected = {k: fresh.config_for_block(k, [], v) for k, v in fresh.blocks.items() if k in demo.blocks}
        # An event touches a few blocks: only those entries are built...
        textbox = next(k for k, b in demo.blocks.items() if isinstance(b, gr.Textbox) and "props" in expected[k])
        state._update_value_in_config(textbox, "typed by the user")
        assert state.__dict__.get("_parley_config") is None and list(state.__dict__["_parley_touched"]) == [textbox]
        # ...and the whole dict, when read, is Gradio's with that change.
        expected[textbox]["props"]["value"] = "typed by the user"
        assert state.config_values == expected
        # Entries are built from one per block, but each session has its own: a value set in one
        # is not seen by another.
        other = SessionState(demo)
        other._update_value_in_config(textbox, "someone else")
        assert state.config_values[textbox]["props"]["value"] == "typed by the user"
        assert other.config_values[textbox]["props"]["value"] == "someone else"
        assert other.config_values == {**expected, textbox: {**expected[textbox], "props": {**expected[textbox]["props"], "value": "someone else"}}}
        # writes go through the full dict, as in Gradio
        some_state = next(k for k, b in demo.blocks.items() if isinstance(b, gr.State))
        state[some_state] = "value"
        assert state[some_state] == "value"
        assert list(state.components)


def test_the_idle_queue_loop_waits_and_still_starts_every_event():
    assert gradio_patches.queue_waits_for_work()
    sleeps = {"idle": 0, "progress": 0}
    real = gradio_patches._sleep

    async def counting(delay: float, result: Any = None) -> Any:
        if delay is demo._queue.sleep_when_free:
            sleeps["idle"] += 1
        elif delay is demo._queue.progress_update_sleep_when_free:
            sleeps["progress"] += 1
        return await real(delay, result)

    lock = threading.Lock()
    with gr.Blocks() as demo:
        box = gr.Textbox()
        out = gr.Textbox()

        def slow(text: str) -> str:
            with lock:  # one at a time: concurrency_limit=1 below makes the others queue
                time.sleep(0.05)
            return text.upper()

        box.submit(slow, box, out, api_name="shout", concurrency_limit=1)
    demo.queue()
    queueing.asyncio.sleep = counting
    try:
        _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
        try:
            from gradio_client import Client

            client = Client(url, verbose=False)
            time.sleep(0.3)  # idle
            before = dict(sleeps)
            time.sleep(1.0)
            # Gradio polls every 1 ms (~1,000 here) and its progress loop every 10 ms (~100);
            # waiting for work wakes each at most every 50 ms.
            for loop_name in ("idle", "progress"):
                wakeups = sleeps[loop_name] - before[loop_name]
                assert 5 <= wakeups <= 25, (loop_name, wakeups)
            # Events pushed to an idle queue start; the ones waiting for the concurrency slot start as
            # soon as it frees (each is woken by the end of the one before).
            jobs = [client.submit("abc", api_name="/shout") for _ in range(4)]
            assert [j.result(timeout=30) for j in jobs] == ["ABC"] * 4
        finally:
            demo.close()
    finally:
        queueing.asyncio.sleep = real
    assert isinstance(demo._queue.sleep_when_free, gradio_patches._IdleWait)


async def test_idle_wait_returns_at_once_when_woken_before_it_waits():
    idle = gradio_patches._IdleWait(0.001)
    assert idle == 0.001  # Gradio still reads it as its 1 ms
    idle.event = asyncio.Event()
    idle.wake()
    await asyncio.wait_for(gradio_patches._sleep(idle), 0.04)  # well under IDLE_WAIT_MAX (50 ms)
    assert not idle.event.is_set(), "cleared for the next wait"


def test_matplotlib_wrapper_is_a_no_op_only_without_matplotlib():
    from gradio import utils

    active = gradio_patches.no_matplotlib_per_call()
    assert active == (importlib.util.find_spec("matplotlib") is None)
    if active:
        assert utils.MatplotlibBackendMananger is gradio_patches._NoBackendSwitch
        with utils.MatplotlibBackendMananger():
            pass


def test_blocks_build_their_fastapi_app_only_when_it_is_needed():
    from gradio import routes

    assert gradio_patches.app_built_at_launch()
    built = []
    real = routes.App.create_app

    def counting(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        if out is not gradio_patches._PENDING:
            built.append(out)
        return out

    app_cls: Any = routes.App  # patched for the test, as the module patches it
    app_cls.create_app = staticmethod(counting)
    try:
        with gr.Blocks() as demo:
            with gr.Blocks():  # nested, like the ChatInterface inside Parley's Blocks
                gr.Textbox()
            box = gr.Textbox()
            box.submit(lambda text: text, box, box, api_name="echo")
        demo.queue()
        assert built == [], "constructor, __exit__ and queue() build nothing"
        assert demo.__dict__["_parley_app"] is gradio_patches._PENDING
        app = demo.app  # read before launch (as gr.mount_gradio_app-style code may): built then, once
        assert isinstance(app, routes.App) and demo.app is app
        _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
        try:
            from gradio_client import Client

            assert Client(url, verbose=False).predict("hi", api_name="/echo") == "hi"
            assert demo.app is not app and built == [demo.app]  # launch builds the one that serves, as before
        finally:
            demo.close()
    finally:
        app_cls.create_app = real


def _on_event_loop() -> bool:
    """Whether the caller runs on an event loop (inline) rather than in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_listed_components_are_processed_inline_and_the_others_in_a_thread(monkeypatch):
    assert gradio_patches.inline_simple_processing()
    assert "Textbox" in gradio_patches.INLINE_COMPONENTS and "ColorPicker" not in gradio_patches.INLINE_COMPONENTS
    seen: dict[str, bool] = {}

    def record(cls: type[Any], name: str) -> None:
        original = getattr(cls, name)

        @functools.wraps(original)  # keeps the name the patch looks for (preprocess/postprocess)
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            seen[f"{cls.__name__}.{name}"] = _on_event_loop()
            return original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, method)

    for cls in (gr.Textbox, gr.ColorPicker):
        for name in ("preprocess", "postprocess"):
            record(cls, name)

    with gr.Blocks() as demo:
        text, color = gr.Textbox(), gr.ColorPicker()
        text_out, color_out = gr.Textbox(), gr.ColorPicker()
        text.submit(lambda t, c: (t.upper(), c), [text, color], [text_out, color_out], api_name="go")
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        from gradio_client import Client

        assert Client(url, verbose=False).predict("abc", "#ff0000", api_name="/go") == ("ABC", "#ff0000")
    finally:
        demo.close()
    assert seen == {
        "Textbox.preprocess": True, "Textbox.postprocess": True,  # listed: inline, on the event loop
        "ColorPicker.preprocess": False, "ColorPicker.postprocess": False,  # not listed: a worker thread, as Gradio does
    }


def test_an_async_generator_handler_is_called_on_the_loop_and_a_sync_function_in_a_thread(monkeypatch):
    """Calling an async generator function only builds the generator: it needs no worker thread (Gradio sent it to
    one before every streamed event's first update). A plain function still runs in a thread, as Gradio does."""
    from anyio._backends._asyncio import AsyncIOBackend

    assert gradio_patches.inline_simple_processing()
    threaded: list[str] = []
    real = AsyncIOBackend.run_sync_in_worker_thread

    async def spy(func: Any, *args: Any, **kwargs: Any) -> Any:
        threaded.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(AsyncIOBackend, "run_sync_in_worker_thread", classmethod(lambda cls, *a, **k: spy(*a, **k)))

    async def stream(text: str):
        yield text + "1"
        yield text + "2"

    def plain(text: str) -> str:
        return text.upper()

    with gr.Blocks() as demo:
        box, out = gr.Textbox(), gr.Textbox()
        box.submit(stream, box, out, api_name="stream")
        box.change(plain, box, out, api_name="plain")
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    try:
        from gradio_client import Client

        client = Client(url, verbose=False)
        assert client.predict("ab", api_name="/stream") == "ab2"
        assert client.predict("ab", api_name="/plain") == "AB"
    finally:
        demo.close()
    assert "plain" in threaded, threaded  # the control: a plain function still goes to a worker thread
    assert "stream" not in threaded, threaded


def test_tracked_states_match_gradios_own_for_every_event(fake_server, tmp_path):
    from tests.apphelpers import app_env, in_process_app
    from ui.gradio_patch_states import tracked_states_once

    assert tracked_states_once(gradio_patches._version_ok)
    patched = gr.Blocks.get_state_ids_to_track
    original = patched._parley_original
    with in_process_app(app_env(fake_server, f"sqlite:///{tmp_path / 'p.db'}")) as (_, services):
        demo = services.demo
        state = SessionState(demo)
        for k, block in demo.blocks.items():  # values to hash, different per state
            if isinstance(block, gr.State):
                state[k] = [{"role": "user", "content": f"state {k}"}]
        watched = 0
        for fn in demo.fns.values():
            for _ in range(2):  # computed, then from what was kept
                assert patched(demo, fn, state) == original(demo, fn, state), fn.name
            watched += bool(original(demo, fn, state)[0])
        assert watched, "no event of the app watches a state: the comparison above proved nothing"
        # A `change` listener added to a session's events (as gr.render does) is seen at once.
        fn, unwatched = next((fn, b) for fn in demo.fns.values() for b in fn.outputs
                             if b.stateful and b._id not in original(demo, fn, state)[0])
        patched(demo, fn, state)  # kept from before the listener exists
        extra = copy(next(iter(state.blocks_config.fns.values())))
        extra.targets = [(unwatched._id, "change")]
        state.blocks_config.fns[-1] = extra
        assert unwatched._id in patched(demo, fn, state)[0]
        assert patched(demo, fn, state) == original(demo, fn, state)


def test_the_disconnect_check_reads_uvicorns_flags_and_still_sees_a_client_leave(fake_server, tmp_path, monkeypatch):
    """The SSE stream's per-message check takes the flag path for a real queue/data request, and a client that
    leaves mid-reply is still noticed: Gradio stops sending to it and ends the event, as with Starlette's check."""
    import httpx

    from bench.loadgen import GradioChat
    from tests.apphelpers import app_env, in_process_app
    from ui import gradio_patch_sse
    from ui.gradio_patch_sse import flag_disconnect_check

    assert flag_disconnect_check(gradio_patches._version_ok)
    seen: list[bool] = []
    real = gradio_patch_sse.uvicorn_cycle
    monkeypatch.setattr(gradio_patch_sse, "uvicorn_cycle", lambda receive: seen.append(real(receive) is not None) or real(receive))

    async def scenario(url: str, services: Any) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            chat = await GradioChat(client, url).discover()
            result = await chat.turn("openai:rate-2000-tokens-50")
            assert result.error is None and result.ttlt is not None
            assert seen and all(seen), "the queue stream's checks did not reach uvicorn's flags"
            # A slow reply, left after its first token: the server must see the client go.
            session = "leaver" + str(time.time_ns())
            data = list(chat.template)
            data[chat.message_i], data[chat.model_i] = "hello", "openai:rate-5-tokens-200"
            r = await client.post(f"{url}/gradio_api/queue/join", json={"data": data, "fn_index": chat.fn_index, "session_hash": session})
            assert r.status_code == 200
            async with client.stream("GET", f"{url}/gradio_api/queue/data", params={"session_hash": session}) as s:
                async for line in s.aiter_lines():
                    if "process_generating" in line:
                        break
            for _ in range(200):  # Gradio drops a gone session's pending messages once its stream notices
                if session not in services.demo._queue.pending_messages_per_session:
                    break
                await asyncio.sleep(0.05)
            assert session not in services.demo._queue.pending_messages_per_session

    with in_process_app(app_env(fake_server, f"sqlite:///{tmp_path / 'p.db'}")) as (url, services):
        asyncio.run(scenario(url, services))


class _CountingDict(dict):
    """A session's listeners dict that counts how often all of it is read (the scan the patch keeps)."""

    scans = 0

    def values(self):  # type: ignore[override]
        type(self).scans += 1
        return super().values()


def test_tracked_states_are_scanned_once_while_sessions_take_turns(fake_server, tmp_path):
    """Regression: each session holds its own copy of the listeners, and keying the kept answer by the copy
    redid the scan whenever another session's update came between two of one session's (any concurrent streams)."""
    from tests.apphelpers import app_env, in_process_app
    from ui.gradio_patch_states import tracked_states_once

    assert tracked_states_once(gradio_patches._version_ok)
    patched = gr.Blocks.get_state_ids_to_track
    original = patched._parley_original
    with in_process_app(app_env(fake_server, f"sqlite:///{tmp_path / 'p.db'}")) as (_, services):
        demo = services.demo
        chat = next(fn for fn in demo.fns.values() if fn.api_name == "chat")
        sessions = [SessionState(demo) for _ in range(3)]
        for state in sessions:
            state.blocks_config.fns = _CountingDict(state.blocks_config.fns)
        expected = [original(demo, chat, state) for state in sessions]
        assert expected[0][0], "/chat watches no state: nothing to keep"
        _CountingDict.scans = 0
        for _ in range(4):
            for state, want in zip(sessions, expected, strict=True):
                assert patched(demo, chat, state) == want
        assert _CountingDict.scans <= 1, f"{_CountingDict.scans} scans for 12 updates"
