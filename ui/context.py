"""What the chat layout hands to each extra tab (compare, dashboard, batch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from core.services import Services


@dataclass
class TabContext:
    services: Services
    #: The owner key of this session (set on page load). Handlers must still call
    #: core.identity.owner_for(request, profile, owner) themselves: endpoints are callable by index.
    owner: gr.State
    model: gr.Dropdown
    system_prompt: gr.Textbox
    #: temperature, top_p, max_tokens, seed, effort (in that order)
    params: list[Any]
    #: (label, "provider:model") pairs known at build time
    model_choices: list[tuple[str, str]] = field(default_factory=list)
