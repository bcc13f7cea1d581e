"""ui.params.unchecked survives Gradio's per-session copies of a component.

Gradio rebuilds a session's copy of a component from its constructor arguments whenever a handler
updates it (the sidebar shows and hides the parameter widgets for each model, at page load too);
the copy must still hand its raw value to the handler, whose message names what is wrong.
"""

from __future__ import annotations

import asyncio

import gradio as gr
import pytest
from gradio.state_holder import SessionState

from ui.params import unchecked


def updated_copy(component: gr.components.Component) -> gr.components.Component:
    """The session's copy of `component` after a handler sent it an update, made by Gradio's own code."""
    with gr.Blocks() as demo:
        component.render()
        button = gr.Button()
        button.click(lambda: gr.update(visible=False), None, component)
    state = SessionState(demo)
    fn = demo.fns[max(demo.fns)]
    # One output: Gradio takes the handler's return value as it is (not in a list).
    asyncio.run(demo.postprocess_data(fn, gr.update(visible=False), state))
    copy = state[component._id]
    assert copy is not component, "Gradio made a session copy"
    return copy


@pytest.mark.parametrize("make", [
    lambda: gr.Slider(0, 2, value=1.0, render=False),
    lambda: gr.Number(value=0, precision=0, render=False),
    lambda: gr.Radio(["default", "low"], value="default", render=False),
])
def test_an_updated_session_copy_still_hands_over_the_raw_value(make) -> None:
    component = unchecked(make())
    assert component.preprocess("abc") == "abc"
    assert updated_copy(component).preprocess("abc") == "abc"


def test_components_not_marked_keep_gradio_s_check() -> None:
    unchecked(gr.Slider(0, 2, value=1.0, render=False))  # patches the class for marked instances only
    with pytest.raises(TypeError):
        gr.Slider(0, 2, value=1.0, render=False).preprocess("abc")
