"""The lazy session config gives the same dict Gradio would build, only later."""

from __future__ import annotations

from copy import copy

import gradio as gr
from gradio.state_holder import SessionState

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
        # writes go through the full dict, as in Gradio
        some_state = next(k for k, b in demo.blocks.items() if isinstance(b, gr.State))
        state[some_state] = "value"
        assert state[some_state] == "value"
        assert list(state.components)
