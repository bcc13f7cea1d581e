"""Who is asking: the owner key every handler passes to the store."""

from __future__ import annotations

import re
from typing import Any

import gradio as gr

# Matched with fullmatch: `$` would also accept a trailing newline, a second owner key for the same id.
_BROWSER_ID = re.compile(r"anon-[A-Za-z0-9_-]{22,64}")
_HF_OWNER = re.compile(r"hf:[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def owner_for(request: gr.Request | None, profile: Any = None, state_owner: str | None = None) -> str:
    """The owner of this call, most trusted source first.

    A login name (APP_USERS) or a Hugging Face profile always wins, so a logged-in user can
    never be steered to another owner. `state_owner` is the owner that `on_load` put in a
    server-side gr.State: Gradio never takes a State's value from the client, and `on_load`
    accepts only well-formed random browser ids. Callers with none of these (gradio_client
    without a page load) get an owner per client session.
    """
    username = getattr(request, "username", None) if request is not None else None
    if username:
        return f"user:{username}"
    if profile is not None and getattr(profile, "username", None):
        return f"hf:{profile.username}"
    if state_owner and (_BROWSER_ID.fullmatch(state_owner) or _HF_OWNER.fullmatch(state_owner)):
        return state_owner
    session = getattr(request, "session_hash", None) or "unknown"
    return f"session:{session}"


def valid_browser_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_BROWSER_ID.fullmatch(value))


def display_name(owner: str) -> str:
    if owner.startswith(("user:", "hf:")):
        return owner.split(":", 1)[1]
    return "this browser"
