"""The reproducibility card of a reply: what produced it, for the reply's footer and the exports. No Gradio.

A card holds the provider, the requested model and the version that answered, the parameters actually
sent, the first 16 hex digits of the system prompt's sha256, the provider's request id, the time and the
SDK version. Nothing secret: no key, no base URL, no header (a base URL can carry credentials, and it
says nothing a rerun needs that the provider name does not). The chat (core/chat.py) and compare panes
(core/compare_run.py) store `stored_fields` with the reply; `card_of` reads a stored reply back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from compare.repro import CARD_FIELDS, CardFields, card_extras

__all__ = ["CARD_FIELDS", "CARD_KEYS", "card_markdown", "card_of", "done_card", "live_card", "stored_fields"]

#: A card's keys, in the order it is shown.
CARD_KEYS: tuple[str, ...] = ("provider", "model", "model_version", "params", "system_prompt_sha256", "request_id",
                              "time", "sdk_version")
_LABELS = {"provider": "Provider", "model": "Requested model", "model_version": "Resolved version",
           "params": "Parameters sent", "system_prompt_sha256": "System prompt sha256", "request_id": "Request id",
           "time": "Time", "sdk_version": "SDK"}


def stored_fields(provider: Any, result: Any, system_prompt: str | None) -> CardFields:
    """finish_turn's card values for a finished reply: its request id, SDK version and system prompt hash."""
    return card_extras(provider, result, system_prompt)


def _get(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def card_of(message: Any) -> dict[str, Any]:
    """The card of a stored reply (a MessagePublic or its dict); fields it never recorded are None."""
    created = _get(message, "created_at")
    time = created.isoformat(timespec="seconds") if isinstance(created, datetime) else created
    return {k: time if k == "time" else _get(message, k) for k in CARD_KEYS}


def live_card(provider: Any, info: Any, result: Any, params: Mapping[str, Any], system_prompt: str | None,
              time: datetime) -> dict[str, Any]:
    """The card of a reply that has just finished (before it is read back from the database)."""
    values = {"provider": info.provider, "model": info.id, "model_version": getattr(result, "model_version", None),
              "params": dict(params), "time": time.isoformat(timespec="seconds"),
              **stored_fields(provider, result, system_prompt)}
    return {k: values[k] for k in CARD_KEYS}


def done_card(provider: Any, info: Any, result: Any, params: Mapping[str, Any], system_prompt: str | None) -> dict[str, Any] | None:
    """`live_card` once the reply has finished (timed now), None while it streams: the chat's hot path pays nothing."""
    if not getattr(result, "done", False):
        return None
    return live_card(provider, info, result, params, system_prompt, datetime.now(UTC))


def _inline(value: Any) -> str:
    # Values come from providers (a version, an id): shown as code, so no markup in them can act.
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return "`" + text.replace("`", "'").replace("\n", " ") + "`"


def card_markdown(card: Mapping[str, Any]) -> str:
    """The card as a short markdown list, for the collapsed block under a reply; unknown fields say so."""
    lines = []
    for key in CARD_KEYS:
        value = card.get(key)
        if key == "system_prompt_sha256" and value is None:
            shown = "none (no system prompt, or not recorded)"
        elif value is None or value == {}:
            shown = "not recorded" if key != "params" else "none"
        else:
            shown = _inline(value)
        lines.append(f"- **{_LABELS[key]}**: {shown}")
    return "\n".join(lines)
