"""Browser fixtures: Debian Chromium driven by Playwright, and Parley as a child process."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def chromium_path() -> str | None:
    return os.environ.get("PARLEY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module. Module scope matters: Playwright's sync API keeps an event
    loop running in this thread while it is open, which would break every asyncio test after it."""
    path = chromium_path()
    if not path:
        pytest.skip("Chromium not found (install Debian's chromium or set PARLEY_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


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
def fresh_state_on_rerun(request):
    """A rerun starts from an empty database, so that it must pass on its own and not on top of
    (or against) the rows of the failed first attempt: the app process is module-scoped."""
    if getattr(request.node, "execution_count", 1) > 1:
        for name in ("server", "cluster"):  # the module-scoped apps: (process..., database URL)
            if name in request.fixturenames:
                value = request.getfixturevalue(name)
                for url in value if isinstance(value, tuple) else ():
                    if isinstance(url, str) and url.startswith(("sqlite", "postgresql")):
                        wipe_database(url)
    yield
