"""Blind secrecy through the real handlers (issue 12, item 1): a blind run streamed by the compare
tab, then read back through the sidebar's exports, the dashboard and the comparison export, before
and after the vote."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest

from chat.registry import Registry, Settings
from core.config import AppConfig
from core.exports import ExportFiles
from core.services import Services
from storage.db import init_db, make_engine
from tests.apphelpers import app_env
from tests.test_compare import collect, request, run_data
from ui.compare.tab import build_compare_tab
from ui.context import TabContext
from ui.dashboard import DashboardHandlers
from ui.sidebar import SidebarHandlers

USER = "blindapp"
MODELS = ["openai:tokens-5", "anthropic:tokens-6"]
SECRETS = ("openai", "anthropic", "tokens-5", "tokens-6")
PROMPT = "Which of you is the wombat expert?"


@pytest.fixture(scope="module")
def services(fake_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("blindapp")
    engine = make_engine(f"sqlite:///{folder / 'parley.db'}")
    init_db(engine)
    env = app_env(fake_server, "unused")
    built = Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env)), engine)
    built.exports = ExportFiles(folder / "exports", timers=False)  # never the shared Gradio cache
    yield built
    engine.dispose()


@pytest.fixture(scope="module")
def tab(services):
    with gr.Blocks():
        ctx = TabContext(
            services=services, owner=gr.State(None), model=gr.Dropdown(), system_prompt=gr.Textbox(),
            params=[gr.Slider(0, 2, value=1.0), gr.Slider(0, 1, value=1.0), gr.Slider(1, 65536, value=512),
                    gr.Number(value=None), gr.Radio(["default", "low"], value="default")],
            model_choices=[("Fast", "openai:fast")],
        )  # fmt: skip
        return build_compare_tab(ctx)


def downloaded(update: dict) -> str:
    assert update.get("visible") is True, f"no file was offered: {update}"
    return Path(update["value"]).read_text(encoding="utf-8")


def models_on_dashboard(loop, services) -> dict[str, int]:
    data = loop.run_until_complete(DashboardHandlers(services).data("All time", None, request(USER)))
    return {f"{r['Provider']}:{r['Model']}": r["Replies"] for r in data.rows}


def test_a_blind_run_names_no_model_anywhere_until_the_vote(tab, services):
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        session: dict = {}
        collect(loop, tab, run_data(tab, PROMPT, MODELS, blind=True, session=session), USER)
        assert session.get("comparison_id"), "the run was saved"
        side = SidebarHandlers(services)

        # Manage conversation › Export with no conversation open: every chat, and no pane.
        for export in (side.export_json, side.export_markdown):
            text = downloaded(loop.run_until_complete(export(None, None, request(USER))))
            assert PROMPT not in text, "a blind pane was exported as a conversation"
            for secret in SECRETS:
                assert secret not in text.lower()
        # A pane asked for by id is refused (the file is not offered).
        pane_id = session["panes"][0]["conversation_id"]
        refused = loop.run_until_complete(side.export_json(pane_id, None, request(USER)))
        assert refused.get("visible") is False

        assert models_on_dashboard(loop, services) == {}, "the dashboard would name the panes' models"

        jsonl = downloaded(loop.run_until_complete(tab.handlers.export("jsonl", None, request(USER)))[tab.download])
        [record] = [json.loads(line) for line in jsonl.splitlines()]
        assert record["prompt"] == PROMPT and record["vote"] is None
        assert [p["model"] for p in record["panes"]] == [None, None]
        for secret in SECRETS:
            assert secret not in jsonl.lower(), f"{secret} is in the comparison export before the vote"

        loop.run_until_complete(tab.handlers.vote("1", session, None, request(USER)))

        assert models_on_dashboard(loop, services) == {m: 1 for m in MODELS}, "voted panes count"
        jsonl = downloaded(loop.run_until_complete(tab.handlers.export("jsonl", None, request(USER)))[tab.download])
        [record] = [json.loads(line) for line in jsonl.splitlines()]
        assert [p["model"] for p in record["panes"]] == session["refs"]
        assert record["vote"]["winner_model"] == session["refs"][1]
    finally:
        loop.close()
