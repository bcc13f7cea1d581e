"""The pieces of a reproducibility card that every surface shares: the SDK version and the system prompt's hash.

A card says what produced a reply: provider, requested model and resolved version, the parameters sent,
`system_prompt_sha256`, the provider's request id, the time and `sdk_version`. Nothing in it is secret:
no key, no base URL, no header. core/repro.py builds cards for chats and comparisons; the batch engine
(compare/batch.py) writes the same fields into its rows with these helpers.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from typing import Any, TypedDict

#: The card's fields beyond what a reply already records (provider, model, model_version, params, time).
CARD_FIELDS: tuple[str, ...] = ("system_prompt_sha256", "request_id", "sdk_version")
#: The provider module whose class a provider is, and the distribution whose version the card names.
_SDKS = {"chat.providers.openai": "openai", "chat.providers.anthropic": "anthropic", "chat.providers.gemini": "google-genai"}
#: Longest request id kept (a provider's id is short; anything longer is not one).
MAX_REQUEST_ID = 200


def system_prompt_sha256(system_prompt: str | None) -> str | None:
    """The first 16 hex digits of the sha256 of the system prompt as sent (UTF-8); None when there is none."""
    text = (system_prompt or "").strip()
    if not text:
        return None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def sdk_version(provider: Any) -> str | None:
    """`openai 3.57.0` (the SDK that made the call and its installed version), "demo" for the demo, else None.

    Found by the provider's class (an OpenAI-compatible endpoint is the OpenAI provider under another name),
    so a test's fake provider names no SDK.
    """
    if getattr(provider, "name", None) == "demo" or type(provider).__module__ == "chat.providers.demo":
        return "demo"
    for cls in type(provider).__mro__:
        dist = _SDKS.get(cls.__module__)
        if dist is not None:
            return _installed(dist)
    return None


@functools.cache
def _installed(dist: str) -> str:
    """`openai 3.57.0`: read once per process; importlib.metadata parses the package's METADATA file on every
    call (1.3 ms of CPU), and a turn asks two or three times (python -m bench.turns)."""
    try:
        return f"{dist} {importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return dist


def clean_request_id(value: Any) -> str | None:
    """The provider's request id as a card keeps it: printable text, at most MAX_REQUEST_ID characters, else None."""
    if not isinstance(value, str):
        return None
    text: str = value.strip()
    if not text or len(text) > MAX_REQUEST_ID or not text.isprintable():
        return None
    return text


def request_id_of(result: Any) -> Any:
    """The provider's request id of a reply: a turn's own, or a tool loop's last step that has one."""
    rid = getattr(result, "request_id", None)
    if rid is None:
        rid = next((s.request_id for s in reversed(getattr(result, "steps", ()) or ()) if getattr(s, "request_id", None)), None)
    return rid


class CardFields(TypedDict):
    """The CARD_FIELDS of a reply, as storage's finish_turn takes them."""

    system_prompt_sha256: str | None
    request_id: str | None
    sdk_version: str | None


def card_extras(provider: Any, result: Any, system_prompt: str | None) -> CardFields:
    """The CARD_FIELDS of one finished reply (a TurnResult or a tool loop's result), for its row."""
    return {
        "system_prompt_sha256": system_prompt_sha256(system_prompt),
        "request_id": clean_request_id(request_id_of(result)),
        "sdk_version": sdk_version(provider),
    }
