"""Parameter widgets that leave the checking to core.params.params_from_inputs.

Gradio's own Slider/Number/Radio check their input before any handler runs, and a value of the
wrong type (temperature="abc", seed="x", a null slider) fails there with a TypeError that the
browser and API clients see as a bare "Error". `unchecked` components hand the raw value
to `params_from_inputs` instead, which says which parameter is wrong and why; nothing is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr

# The parser lives in core (no Gradio); these names are re-exported for the UI modules that use them.
from core.params import EFFORT_CHOICES

__all__ = ["EFFORT_CHOICES", "UNCHECKED", "unchecked"]

#: The mark of an unchecked component, kept in its constructor arguments. Gradio rebuilds a session's
#: copy of a component from those arguments whenever a handler updates it (blocks.py,
#: postprocess_data: `block.__class__(**kwargs)`), so anything set on the instance is lost on the copy,
#: and the copy would check its input again. The mark survives the rebuild.
UNCHECKED = "parley-unchecked"

C = TypeVar("C", bound=gr.components.Component)


def _install(cls: type[gr.components.Component]) -> None:
    """Make `cls.preprocess` hand marked instances their raw value (once per class; unmarked ones unchanged)."""
    if cls.__dict__.get("_parley_unchecked"):
        return
    checked: Callable[[Any, Any], Any] = cls.preprocess

    def preprocess(self: Any, payload: Any) -> Any:
        if UNCHECKED in (getattr(self, "elem_classes", None) or ()):
            return payload
        return checked(self, payload)

    preprocess.__name__ = "preprocess"  # still run inline by ui/gradio_patches (it matches by this name)
    preprocess.__doc__ = checked.__doc__
    cls.preprocess = preprocess  # type: ignore[method-assign]  # on purpose: marked instances skip the check
    cls._parley_unchecked = True  # type: ignore[attr-defined]  # the class is patched once


def unchecked(component: C) -> C:
    """The component with its value handed to the handler as sent (params_from_inputs checks it).

    A mark in its classes, not a subclass: Gradio writes a .pyi file next to the module of every
    Component subclass it sees defined, and draws a subclass only if marked as a template.
    """
    _install(type(component))
    classes = [c for c in (component.elem_classes or []) if c != UNCHECKED] + [UNCHECKED]
    component.elem_classes = classes
    component.constructor_args["elem_classes"] = classes
    return component
