"""Shared fixtures: the fake provider server, databases, and the app."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _bytecode_cache_outside_the_clone() -> None:
    """With PYTHONDONTWRITEBYTECODE set (as on the CI machine), every process compiled from source what it
    imported: each xdist worker re-ran pytest's assertion rewriting over every test module and recompiled the
    project (collection 21.8 → 13.2 s of CPU per worker when cached), and each `python app.py` the tests
    start did the same (and all of site-packages too after a `pip install --no-compile`). Bytecode goes to a
    cache outside the clone instead, as mypy's does (.ci/run): the tree stays untouched. Set here, before
    the workers and apps start, so that they inherit it; Python checks each cached entry against its
    source's mtime and size, so it cannot go stale."""
    if not sys.dont_write_bytecode or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "parley-pyc"
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(cache)
    sys.pycache_prefix = str(cache)
    sys.dont_write_bytecode = False


_bytecode_cache_outside_the_clone()

import pytest  # noqa: E402

from tests import parallel  # noqa: E402
from tests.fakes import FakeServer  # noqa: E402


def _redis_db_per_worker() -> None:
    """Each xdist worker uses a Redis database of its own (gw0 the one in TEST_REDIS_URL, gw1 the one below,
    ...), so a test that resets its rate-limit keys cannot clear another worker's. PostgreSQL needs nothing:
    every fixture works in a schema or database named afresh (tests/storage/conftest.py)."""
    worker, url = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("TEST_REDIS_URL", "").strip()
    if not worker.startswith("gw") or not url:
        return
    parts = urlsplit(url)
    first = int(parts.path.strip("/") or 0)
    os.environ["TEST_REDIS_URL"] = urlunsplit(parts._replace(path=f"/{(first - int(worker[2:])) % 16}"))


_redis_db_per_worker()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    return parallel.workers(config.args, config.rootpath)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    return parallel.make_scheduler(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark the tests of tests/parallel.py's SERIAL modules `serial` (the scheduler knows them by path, so
    a `serial` mark anywhere else would be ignored: refuse it)."""
    for item in items:
        if parallel.is_serial(item.nodeid):
            item.add_marker(pytest.mark.serial)
        elif item.get_closest_marker("serial"):
            raise pytest.UsageError(f"{item.nodeid} is marked serial: list its module in tests/parallel.py SERIAL instead")


@pytest.fixture(scope="session")
def fake_server():
    """One fake provider server for the whole run (scenarios are keyed by model name)."""
    with FakeServer(api_key="test-key") as srv:
        yield srv


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'parley.db'}"


def _patient_gradio_client() -> None:
    """gradio_client reads an app's /config with httpx's 5-second default; with three test workers on a
    2-core machine a fresh app's first config has taken longer (a ReadTimeout, not a failure of the app).
    Tests that pass their own httpx timeout keep it."""
    import gradio_client.client as gc

    original = gc.Client.__init__

    def init(self: Any, *args: Any, httpx_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        patient = dict(httpx_kwargs or {})
        patient.setdefault("timeout", 30)
        original(self, *args, httpx_kwargs=patient, **kwargs)

    gc.Client.__init__ = init  # type: ignore[method-assign]


_patient_gradio_client()
