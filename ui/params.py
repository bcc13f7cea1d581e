"""Parameter widgets that leave the checking to core.params.params_from_inputs.

Gradio's own Slider/Number/Radio check their input before any handler runs, and a value of the
wrong type (temperature="abc", seed="x", a null slider) fails there with a TypeError that the
browser and API clients see as a bare "Error". `unchecked` components hand the raw value
to `params_from_inputs` instead, which says which parameter is wrong and why; nothing is sent.
"""

from __future__ import annotations

from types import MethodType
from typing import Any, TypeVar

import gradio as gr

# The parser lives in core (no Gradio); these names are re-exported for the UI modules that use them.
from core.params import EFFORT_CHOICES

__all__ = ["EFFORT_CHOICES", "unchecked"]


def _pass_through(self: Any, payload: Any) -> Any:
    return payload


_pass_through.__name__ = "preprocess"  # still run inline by ui/gradio_patches (it matches by this name)

C = TypeVar("C", bound=gr.components.Component)


def unchecked(component: C) -> C:
    """The component with its value handed to the handler as sent (params_from_inputs checks it).

    An instance attribute, not a subclass: Gradio writes a .pyi file next to the module of every
    Component subclass it sees defined, and draws a subclass only if marked as a template.
    """
    component.preprocess = MethodType(_pass_through, component)  # type: ignore[method-assign]  # on purpose: this one instance skips its check
    return component
