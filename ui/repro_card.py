"""The reproducibility card as a chat bubble: folded under a compare pane's reply (core/repro.py builds the card)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core.repro import card_markdown, live_card

CARD_TITLE = "🔁 Reproducibility card"


def pane_card_bubble(pane: Any) -> list[dict[str, Any]]:
    """The folded card of a compare pane's finished reply ([] while it has none). Only for what may name the model:
    a blind pane's is drawn into the display shown after the vote."""
    turn = getattr(pane, "turn", None)
    if turn is None or not turn.result.done:
        return []
    card = live_card(pane.provider, pane.info, turn.result, pane.sent_params, pane.system_prompt, datetime.now(UTC))
    return [{"role": "assistant", "content": card_markdown(card), "metadata": {"title": CARD_TITLE, "status": "done"}}]
