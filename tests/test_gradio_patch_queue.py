"""ui/gradio_patch_queue.py: the traffic summary is kept, not recomputed, while monitoring is off (and recomputed
as before when it is on), and Gradio's login check runs on the event loop while still refusing a caller with no
login."""

from __future__ import annotations

import inspect

import gradio as gr
import httpx
from fastapi.dependencies import utils as fastapi_deps
from gradio import queueing

from tests.apphelpers import free_port
from ui.gradio_patch_queue import all_routes, analytics_only_when_monitored, login_check_inline
from ui.gradio_patches import _version_ok


def _queue(monitoring: bool) -> queueing.Queue:
    with gr.Blocks() as demo:
        box = gr.Textbox()
        box.submit(lambda x: x, box, box, api_name="echo")
    demo.queue()
    demo.enable_monitoring = monitoring
    queue = demo._queue
    queue.events_recorded = 5  # events since the last summary: due for a new one
    return queue


RECORDS = [{"time": 1.0, "status": "success", "function": "echo", "process_time": 0.1, "session_hash": "s"}]


async def test_no_summary_is_computed_while_monitoring_is_off(monkeypatch):
    assert analytics_only_when_monitored(_version_ok)
    frames = []
    get_df = queueing.Queue._get_df
    monkeypatch.setattr(queueing.Queue, "_get_df", staticmethod(lambda records: frames.append(1) or get_df(records)))
    queue = _queue(monitoring=False)
    kept = queue.cached_event_analytics_summary
    assert await queueing.run_sync(queue.compute_analytics_summary, RECORDS) is kept
    assert frames == []


async def test_with_monitoring_on_the_summary_is_computed_as_gradio_does():
    assert analytics_only_when_monitored(_version_ok)
    queue = _queue(monitoring=True)
    summary = await queueing.run_sync(queue.compute_analytics_summary, RECORDS)
    assert summary["functions"]["echo"]["total_requests"] == 1
    # Any other function still goes to a worker thread as before.
    assert await queueing.run_sync(lambda: "other") == "other"


def test_the_login_check_runs_inline_and_still_refuses_a_caller_without_a_login(monkeypatch):
    assert login_check_inline(_version_ok)
    threaded = []
    real = fastapi_deps.run_in_threadpool

    async def spy(func, *args, **kwargs):
        threaded.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(fastapi_deps, "run_in_threadpool", spy)
    rebuilt = []  # sub-dependencies FastAPI builds again per request (it does for all of them once an override is set)
    get_dependant = fastapi_deps.get_dependant
    monkeypatch.setattr(fastapi_deps, "get_dependant", lambda **kw: rebuilt.append(kw["call"]) or get_dependant(**kw))
    with gr.Blocks() as demo:
        box = gr.Textbox()
        box.submit(lambda x: x, box, box, api_name="echo")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, auth=("ann", "secret"))
    try:
        url = f"http://127.0.0.1:{port}"
        routes = {route.path: route for route in all_routes(demo.server_app)}
        assert "/gradio_api/queue/join" in routes and "/config" in routes  # the API's routes and the app's own
        checks = {d.call for route in routes.values() for d in getattr(getattr(route, "dependant", None), "dependencies", ())
                  if getattr(d.call, "__name__", "") == "login_check"}
        assert checks and all(inspect.iscoroutinefunction(f) for f in checks)
        assert not demo.server_app.dependency_overrides
        rebuilt.clear()  # what launch() built
        assert httpx.get(f"{url}/config", timeout=30).status_code == 401
        assert httpx.get(f"{url}/gradio_api/queue/data", params={"session_hash": "x"}, timeout=30).status_code == 401
        with httpx.Client(base_url=url, timeout=30) as client:  # a loaded CI machine: see test_new_user_edges
            assert client.post("/login", data={"username": "ann", "password": "secret"}).status_code == 200
            assert client.get("/config").status_code == 200
            joined = client.post("/gradio_api/queue/join", json={"data": ["hi"], "fn_index": 0, "session_hash": "s1"})
            assert joined.status_code == 200, joined.text
        assert "login_check" not in threaded, threaded
        assert not rebuilt, f"dependencies rebuilt per request: {rebuilt}"
    finally:
        demo.close()


def test_type_hints_are_gradios_own_and_evaluated_once_per_function(monkeypatch):
    import typing

    from gradio import utils

    from ui.gradio_patch_queue import type_hints_once

    assert type_hints_once(_version_ok)
    original = utils.get_type_hints._parley_original
    evaluated = []
    real = typing.get_type_hints
    monkeypatch.setattr(typing, "get_type_hints", lambda fn, *a, **k: evaluated.append(fn) or real(fn, *a, **k))

    def handler(message: str, request: gr.Request, profile: gr.OAuthProfile | None = None) -> str:  # noqa: ARG001
        return message

    class Handler:
        async def respond(self, message: "str", request: "gr.Request") -> "str":  # noqa: ARG002, UP037
            return message

        def __call__(self, x: int) -> int:
            return x

    obj = Handler()
    for fn in (handler, obj.respond, Handler().respond, obj, print):
        first, again = utils.get_type_hints(fn), utils.get_type_hints(fn)
        assert first == again == original(fn), fn
        again.clear()  # a caller's change to its copy is not kept
        assert utils.get_type_hints(fn) == original(fn)
    evaluated.clear()
    for _ in range(3):
        utils.get_type_hints(handler)
        utils.get_type_hints(obj.respond)
    assert evaluated == []
    handler.__annotations__ = {"message": int}  # a function given new annotations is looked at again
    assert utils.get_type_hints(handler) == {"message": int}


def test_the_queue_routes_are_tried_first_and_every_route_still_answers(monkeypatch):
    from fastapi import routing

    from ui.gradio_patch_queue import HOT_PATHS, hot_routes_first

    assert hot_routes_first(_version_ok)
    with gr.Blocks() as demo:
        box = gr.Textbox()
        box.submit(lambda x: x, box, box, api_name="echo")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    tried: list[str] = []
    matches = routing.APIRoute.matches
    monkeypatch.setattr(routing.APIRoute, "matches", lambda self, scope: tried.append(self.path) or matches(self, scope))
    try:
        [api] = [r.original_router for r in demo.server_app.router.routes if hasattr(r, "original_router")]
        assert tuple(r.path for r in api.routes[:2]) == HOT_PATHS
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for path in ("/config", "/gradio_api/info", "/gradio_api/queue/status", "/gradio_api/app_id"):
                assert client.get(path).status_code == 200, path
            tried.clear()
            joined = client.post("/gradio_api/queue/join", json={"data": ["hi"], "fn_index": 0, "session_hash": "s1"})
            assert joined.status_code == 200 and joined.json()["event_id"]
            # The app's own 21 routes come first, then the API's: the join is the first of those (it was the 37th).
            assert len(tried) < 30, f"{len(tried)} routes tried for one join"
            with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": "s1"}) as stream:
                assert any('"process_completed"' in line and "hi" in line for line in stream.iter_lines())
    finally:
        demo.close()
