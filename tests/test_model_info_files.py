"""The sidebar's model info says what a model does with attachments before anything is sent."""

from __future__ import annotations

import pytest

from chat.registry import Registry, Settings
from chat.types import ModelInfo
from core.config import AppConfig
from core.exports import ExportFiles
from core.services import Services
from storage.db import init_db, make_engine
from tests.apphelpers import app_env
from ui.sidebar import SidebarHandlers, files_read


@pytest.mark.parametrize(("vision", "pdf", "said"), [
    (True, True, "reads images, PDFs and text files"),
    (True, False, "reads images and text files; PDFs go as their text"),
    (False, True, "reads PDFs and text files, no images"),
    (False, False, "text files only: no images; PDFs go as their text"),
])
def test_each_capability_is_said(vision: bool, pdf: bool, said: str) -> None:
    assert said in files_read(ModelInfo(provider="p", id="m", vision=vision, pdf=pdf))


def test_the_model_info_line_names_what_the_chosen_model_reads(fake_server, tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'parley.db'}")
    init_db(engine)
    env = app_env(fake_server, "unused")
    services = Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env)), engine)
    services.exports = ExportFiles(tmp_path / "exports", timers=False)  # never the shared Gradio cache
    try:
        side = SidebarHandlers(services)
        assert "reads images, PDFs and text files" in side.on_model_change("demo:parley-demo")[0]
        assert "reads images, PDFs and text files" in side.on_model_change("anthropic:claude-sonnet-4-6")[0]
        assert "text files only" in side.on_model_change("openai:gpt-test")[0]
    finally:
        services.close()
        engine.dispose()
