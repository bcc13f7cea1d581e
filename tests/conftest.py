"""Shared fixtures: the fake provider server, databases, and the app."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402

from tests.fakes import FakeServer  # noqa: E402


@pytest.fixture(scope="session")
def fake_server():
    """One fake provider server for the whole run (scenarios are keyed by model name)."""
    with FakeServer(api_key="test-key") as srv:
        yield srv


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'parley.db'}"
