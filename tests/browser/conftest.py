"""Browser fixtures: Debian Chromium driven by Playwright, and Parley as a child process."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests import parallel
from tests.apphelpers import AppProcess, app_env

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def chromium_path() -> str | None:
    return os.environ.get("PARLEY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="package")
def browser():
    """One Chromium for the browser tests (each test gets its own context, i.e. its own profile).
    Package scope matters: Playwright's sync API keeps an event loop running in this thread while it is
    open, which would break every asyncio test after it; it closes when the last browser test is done."""
    path = chromium_path()
    if not path:
        pytest.skip("Chromium not found (install Debian's chromium or set PARLEY_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Apps:
    """Parley processes for the browser modules, each started while the module before it runs.

    A module lists its apps in `APPS` (fixture name -> settings for tests.apphelpers.app_env) and gets
    each one with `apps.app(request.module, name)`: a fresh SQLite database and process of its own, as
    before. Only the start moves: `python app.py` spends seconds importing Gradio and the SDKs, on one
    core, while the module before it mostly waits on Chromium and the streams of the fake provider.
    """

    def __init__(self, fake_server, tmp_path_factory, modules: list[ModuleType], parts: dict[str, int] | None = None):
        self.fake = fake_server
        self.tmp = tmp_path_factory
        self.modules = modules  # the browser modules in run order
        self.parts = parts or {}  # module name -> its part, on a pytest-xdist worker (tests/parallel.py)
        self.spawned: dict[tuple[str, str], tuple[AppProcess, str]] = {}
        self.taken: set[tuple[str, str]] = set()
        #: The databases of the apps each module is using now (module name -> URLs): a rerun wipes them.
        self.databases: dict[str, list[str]] = {}

    def spawn(self, module: ModuleType) -> None:
        """Start every app `module` declares (those not started yet) without waiting for them."""
        for name, settings in getattr(module, "APPS", {}).items():
            key = (module.__name__, name)
            if key in self.spawned or key in self.taken:
                continue
            db = f"sqlite:///{self.tmp.mktemp(name) / 'parley.db'}"
            self.spawned[key] = (AppProcess(app_env(self.fake, db, **settings)).spawn(), db)

    def spawn_after(self, module: ModuleType) -> None:
        """Start the apps of the module that runs after `module` (on an xdist worker: the next of its part)."""
        part = self.parts.get(module.__name__)
        modules = [m for m in self.modules if self.parts.get(m.__name__) == part]
        names = [m.__name__ for m in modules]
        if module.__name__ in names and names.index(module.__name__) + 1 < len(names):
            self.spawn(modules[names.index(module.__name__) + 1])

    @contextlib.contextmanager
    def app(self, module: ModuleType, name: str) -> Iterator[tuple[AppProcess, str]]:
        """The app `name` of `module`, ready: (process, database URL); stopped when the block ends."""
        key = (module.__name__, name)
        # Asked again after its module's fixtures were torn down (pytest-rerunfailures does that when a
        # module's last test fails): the rerun gets a new process and an empty database, a fresh start.
        self.taken.discard(key)
        self.spawn(module)
        proc, db = self.spawned.pop(key)
        self.taken.add(key)
        using = self.databases.setdefault(module.__name__, [])
        using.append(db)
        try:
            proc.wait_ready()
            # This module's app is up: the next module's may start now (not sooner: two cold starts
            # at once would slow this one down).
            self.spawn_after(module)
            yield proc, db
        finally:
            using.remove(db)
            proc.stop()

    def close(self) -> None:
        for proc, _ in self.spawned.values():
            proc.stop()
        self.spawned.clear()


@pytest.fixture(scope="package", autouse=True)
def apps(request, fake_server, tmp_path_factory) -> Iterator[Apps]:
    """Autouse, so that it comes before `browser`: the first module's apps start before Chromium does."""
    here = Path(__file__).resolve().parent
    modules: list[ModuleType] = []
    paths: dict[str, str] = {}
    for item in request.session.items:
        module = getattr(item, "module", None)
        if module is not None and Path(item.path).resolve().parent == here and module not in modules:
            modules.append(module)
            paths[module.__name__] = item.nodeid.split("::", 1)[0]
    # On a pytest-xdist worker the browser modules come in parts (tests/parallel.py), and this worker
    # runs whichever parts it is given: each module's apps start when it begins (_apps_start_ahead), the
    # next module's while it runs, but only the next of its own part.
    xdist = os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw")
    parts = parallel.browser_parts(paths.values(), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))) if xdist else {}
    launcher = Apps(fake_server, tmp_path_factory, modules, {name: parts[path] for name, path in paths.items() if path in parts})
    if modules and chromium_path() and not xdist:  # without Chromium every browser test skips: start nothing
        launcher.spawn(modules[0])
    yield launcher
    launcher.close()


@pytest.fixture(scope="module", autouse=True)
def _apps_start_ahead(request, apps: Apps) -> None:
    """A module without apps of its own starts the next module's at once (a module with apps starts
    them once its own are up: Apps.app). Its own start here unless started ahead (an xdist worker's first)."""
    if chromium_path():
        apps.spawn(request.module)
    if chromium_path() and not hasattr(request.module, "APPS"):
        apps.spawn_after(request.module)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    yield pg
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def pytest_collection_modifyitems(config, items):
    """Real Chromium on a shared 2-core machine: a browser test may run once more if it fails.

    Every assertion must still pass in that run; a real failure fails twice and is reported.
    """
    for item in items:
        if "browser" in str(item.fspath):
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=1))


def wipe_database(url: str) -> None:
    """Delete every row the app wrote (children first), keeping the schema and its migrations."""
    import sqlalchemy as sa

    from storage.models import SQLModel

    engine = sa.create_engine(url)
    try:
        with engine.begin() as c:
            for table in reversed(SQLModel.metadata.sorted_tables):
                c.execute(table.delete())
    finally:
        engine.dispose()


@pytest.fixture(autouse=True)
def fresh_state_on_rerun(request, apps):
    """A rerun starts from an empty database, so that it must pass on its own and not on top of
    (or against) the rows of the failed first attempt: the app process is module-scoped."""
    if getattr(request.node, "execution_count", 1) > 1:
        for url in list(apps.databases.get(request.module.__name__, ())):  # every app the module is using
            wipe_database(url)
        for name in ("server", "users_server", "cluster"):  # module-scoped apps made without Apps.app
            if name in request.fixturenames:
                value = request.getfixturevalue(name)
                for url in value if isinstance(value, tuple) else ():
                    if isinstance(url, str) and url.startswith(("sqlite", "postgresql")):
                        wipe_database(url)
    yield
