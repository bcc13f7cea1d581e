"""8-10. Work Gradio does for every event and request that Parley never uses or that gives the same answer each
time (`analytics_only_when_monitored`, `login_check_inline`, `type_hints_once`).

8. When an event ends, Gradio 6.31's queue recomputes its traffic summary in a worker thread: a pandas DataFrame
of the last 10,000 events, grouped per function, with percentiles (`Queue.compute_analytics_summary`, recomputed
after every event: GRADIO_ANALYTICS_CACHE_FREQUENCY=1). That is 2.5 ms of CPU per chat turn with 100 events
recorded and 9 ms with 10,000, holding the GIL against the event loop, and it grows as the server runs. The only
reader of the summary is the `/monitoring` page, which Parley turns off (`enable_monitoring=False`); with
monitoring off the queue now keeps its last summary instead (with monitoring on, nothing changes).

9. Every queue request (`/queue/join`, `/queue/data`, each file) depends on Gradio's `login_check`, a plain `def`,
which FastAPI runs in a worker thread: two thread round trips per chat turn before its first token, each a
wake-up and a switch, and in a burst 100 users' worth of them queue for threads. It is a few comparisons (is
there a login, did this request come with a user), so it now runs inline: the same function, called from an
`async` wrapper with the same dependency, put in place of it in each route's dependency tree when the app is
built. (Not through FastAPI's `dependency_overrides`, as a first version did: with any override set, FastAPI
rebuilds every sub-dependency of every request from its signature, `eval`s of string annotations included,
about 0.3 ms a request.)
10. Before every call of an event's function Gradio looks for its special parameters (`gr.Request`, OAuth) in
`typing.get_type_hints(fn)`, which evaluates every string annotation again (modules with `from __future__ import
annotations`, ChatInterface's among them): about 30 `eval`s per chat turn. The hints of a function are kept
(per function, while its `__annotations__` is the same dict of the same size), and a copy is handed out.
12. Every request is routed by trying routes in order, and the two a chat turn makes (`/gradio_api/queue/join`, then
`/gradio_api/queue/data`) come 37th and 41st of Gradio's 59 API routes, after the app's 21 own; FastAPI 0.165 tries
them twice per request (once to pick the included router, once inside it), about 0.2 ms a request. A burst of 100
users makes 200 of them before its last first token. Those two now come first among the API routes
(`hot_routes_first`): no other route's pattern matches their paths (checked when the app is built), so every
request is routed where it was.

All four are part of `ui.gradio_patches.apply_all` (same version check, same PARLEY_GRADIO_PATCHES=off switch).
"""

from __future__ import annotations

import dataclasses
import inspect
import weakref
from typing import Any


def analytics_only_when_monitored(version_ok: Any) -> bool:
    """Patch the queue's `run_sync` so that the analytics summary is not recomputed while monitoring is off."""
    from gradio import queueing

    module: Any = queueing
    if getattr(module.run_sync, "_parley_monitored", False):
        return True
    if not version_ok("analytics-when-monitored"):
        return False
    real_run_sync = module.run_sync

    async def run_sync(func: Any, *args: Any, **kwargs: Any) -> Any:
        queue = getattr(func, "__self__", None)
        if (getattr(func, "__name__", "") == "compute_analytics_summary" and isinstance(queue, queueing.Queue)
                and not getattr(queue.blocks, "enable_monitoring", True)):
            return queue.cached_event_analytics_summary
        return await real_run_sync(func, *args, **kwargs)

    run_sync._parley_monitored = True  # type: ignore[attr-defined]  # marks the patch as applied
    run_sync._parley_original = real_run_sync  # type: ignore[attr-defined]  # the tests compare with it
    module.run_sync = run_sync
    return True


def login_check_inline(version_ok: Any) -> bool:
    """Patch `routes.App.create_app` so that each app it builds runs `login_check` on the event loop.

    Must be applied before `app_built_at_launch`, which keeps the `create_app` it finds for the apps it builds later.
    """

    def fix(app: Any) -> None:
        check = login_check_of(app)
        if check is not None and not inspect.iscoroutinefunction(check):
            swap_dependency(app, check, inline(check))

    return after_create_app("_parley_login_inline", "login-check-inline", version_ok, fix)


#: The routes a chat turn requests, tried first (patch 12).
HOT_PATHS = ("/gradio_api/queue/join", "/gradio_api/queue/data")


def hot_routes_first(version_ok: Any) -> bool:
    """Patch `routes.App.create_app` so that the queue's two routes are tried first among Gradio's API routes.

    Applied before `app_built_at_launch`, as `login_check_inline` is."""

    def fix(app: Any) -> None:
        for router in routers(app):
            move_first(router, HOT_PATHS)

    return after_create_app("_parley_hot_routes", "hot-routes-first", version_ok, fix)


def after_create_app(mark: str, name: str, version_ok: Any, fix: Any) -> bool:
    """Patch `routes.App.create_app` so that `fix(app)` runs on each app it builds; `mark` says it is applied."""
    from gradio import routes

    app_cls: Any = routes.App
    if getattr(app_cls.create_app, mark, False):
        return True
    if not version_ok(name):
        return False
    real_create = app_cls.create_app

    def create_app(*args: Any, **kwargs: Any) -> Any:
        app = real_create(*args, **kwargs)
        fix(app)
        return app

    create_app.__dict__.update(real_create.__dict__)  # the other create_app patches' marks
    setattr(create_app, mark, True)
    app_cls.create_app = staticmethod(create_app)
    return True


def move_first(router: Any, paths: tuple[str, ...]) -> None:
    """Move the routes of `paths` to the front of `router`, those whose path no other route's pattern also matches
    (so the first match of every request stays the same route)."""
    hot = []
    for path in paths:
        found = [r for r in router.routes if getattr(r, "path", None) == path]
        if len(found) != 1:
            continue
        others = [r for r in router.routes if r is not found[0]]
        if any(getattr(r, "path_regex", None) is None or r.path_regex.match(path) for r in others):
            continue  # another route could take this path (or one that cannot say): leave the order alone
        hot.append(found[0])
    if hot:
        router.routes[:] = hot + [r for r in router.routes if not any(r is h for h in hot)]
        router._mark_routes_changed()  # FastAPI keeps a routing table per version of the routes


def login_check_of(app: Any) -> Any:
    """The `login_check` dependency of `app`'s routes (`/config` has it, as every queue route does), or None."""
    for route in all_routes(app):
        for dependency in getattr(getattr(route, "dependant", None), "dependencies", ()):
            if getattr(dependency.call, "__name__", "") == "login_check":
                return dependency.call
    return None


def swap_dependency(app: Any, old: Any, new: Any) -> None:
    """Put `new` where `old` is a dependency of `app`'s routes (at any depth).

    `new` takes the same parameters as `old`, so its place in the tree is `old`'s with only the function
    changed (FastAPI keys what it learns about a function, such as whether it is async, by the function).
    """

    def walk(dependant: Any) -> None:
        for i, sub in enumerate(dependant.dependencies):
            if sub.call is old:
                dependant.dependencies[i] = dataclasses.replace(sub, call=new)
            else:
                walk(sub)

    for route in all_routes(app):
        dependant = getattr(route, "dependant", None)
        if dependant is not None:
            walk(dependant)
        # A route of an included router is served from a copy FastAPI builds from these declarations.
        declared = getattr(route, "dependencies", None)
        if isinstance(declared, list):
            declared[:] = [dataclasses.replace(d, dependency=new) if getattr(d, "dependency", None) is old else d
                           for d in declared]
    for router in routers(app):
        router._mark_routes_changed()  # any copy built already is built again


def routers(app: Any) -> list[Any]:
    """`app`'s router and every router it includes, at any depth (FastAPI 0.165 keeps an included router, Gradio's
    API routes among them, as one entry of its includer's routes)."""
    found: list[Any] = []
    pending = [getattr(app, "router", app)]
    while pending:
        router = pending.pop(0)
        found.append(router)
        pending += [r.original_router for r in router.routes if getattr(r, "original_router", None) is not None]
    return found


def all_routes(app: Any) -> list[Any]:
    """`app`'s routes, with those of the routers it includes (an included router itself is not a route to serve)."""
    return [r for router in routers(app) for r in router.routes if getattr(r, "original_router", None) is None]


def inline(check: Any) -> Any:
    """`check` (a sync dependency taking `user` from another dependency) as an async dependency doing the same."""
    user_dependency = inspect.signature(check).parameters["user"].default  # Depends(get_current_user)

    async def login_check(user: str | None = user_dependency) -> Any:
        return check(user)

    return login_check


def type_hints_once(version_ok: Any) -> bool:
    """Patch `gradio.utils.get_type_hints` to keep each function's hints (see the module docstring)."""
    from gradio import utils

    module: Any = utils
    if getattr(module.get_type_hints, "_parley_once", False):
        return True
    if not version_ok("type-hints-once"):
        return False
    original = module.get_type_hints
    kept: weakref.WeakKeyDictionary[Any, tuple[Any, int, dict[str, Any]]] = weakref.WeakKeyDictionary()

    def get_type_hints(fn: Any) -> Any:
        function = getattr(fn, "__func__", fn)  # a bound method's hints are its function's
        if not inspect.isfunction(function):
            return original(fn)  # a callable object or a builtin: as Gradio does, each time
        annotations = function.__annotations__
        hit = kept.get(function)
        if hit is None or hit[0] is not annotations or hit[1] != len(annotations):
            hit = kept[function] = (annotations, len(annotations), original(fn))
        return dict(hit[2])

    get_type_hints._parley_once = True  # type: ignore[attr-defined]  # marks the patch as applied
    get_type_hints._parley_original = original  # type: ignore[attr-defined]  # the tests compare with it
    module.get_type_hints = get_type_hints
    return True
