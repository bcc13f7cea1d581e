"""Exports of compare runs and votes: JSONL (one run per line) and CSV (one pane per row).

JSONL, one object per run, oldest first::

    {"comparison_id", "created_at", "prompt", "blind",
     "vote": null | {"verdict": "slot"|"tie"|"both_bad", "winner_slot", "winner_model", "voted_at"},
     "panes": [{"slot", "position", "label", "model", "provider", "model_name", "model_version", "system_prompt",
                "params", "text", "reasoning", "finish_reason", "error", "ttft_ms", "duration_ms",
                "tokens_per_second", "input_tokens", "output_tokens", "cost_usd", "conversation_id",
                "request_id", "sdk_version", "system_prompt_sha256",
                "tool_calls": null | [{"id", "name", "arguments", "result", "error", "duration_ms", "status", "step"}]}, ...]}

`position` is the pane the model was given (0 = A; every run puts its models in random panes), the same
number as `slot`, named as the /compare API names it. `request_id`, `sdk_version` and `system_prompt_sha256`
are the reply's reproducibility card (core/repro.py), None for replies saved before it was recorded.

CSV, one row per pane, columns `CSV_COLUMNS` in that order (run fields repeated on each pane's row;
`won` is true for the winning pane, false for the others, empty before a vote or for a tie;
`tool_calls` is the JSON list above, empty for a pane that called no tool).

A blind run without its vote keeps its models secret here too: storage withholds them, so `model`,
`provider`, `model_name`, `model_version`, `system_prompt`, `params`, `cost_usd`, `tool_calls` and the
card's `request_id`, `sdk_version` and `system_prompt_sha256` are empty (and `error` is a generic line) until the vote; the text and timings are there.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from chat.types import tokens_per_second
from core.compare_run import blind_label
from storage.models import ComparisonDetail

CSV_COLUMNS = [
    "comparison_id", "created_at", "prompt", "blind", "slot", "label", "model", "model_version",
    "system_prompt", "params", "text", "finish_reason", "error", "ttft_ms", "duration_ms",
    "tokens_per_second", "input_tokens", "output_tokens", "cost_usd", "verdict", "winner_slot",
    "winner_model", "won", "voted_at", "conversation_id", "tool_calls",
    "position", "request_id", "sdk_version", "system_prompt_sha256",
]  # fmt: skip
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _tps(output_tokens: int | None, duration_ms: int | None, ttft_ms: int | None) -> float | None:
    """Tokens per second from the stored metrics, by the one definition (chat.types.tokens_per_second)."""
    rate = tokens_per_second(output_tokens, ttft_ms, duration_ms)
    return None if rate is None else round(rate, 1)


def _model_ref(provider: str | None, model: str | None) -> str | None:
    """The pane's "provider:model", or None when storage withheld it (a blind run before its vote)."""
    return f"{provider}:{model}" if provider and model else None


def comparison_records(details: Sequence[ComparisonDetail]) -> list[dict[str, Any]]:
    """Each run as the JSONL object documented above."""
    out = []
    for d in details:
        models = {p.slot: _model_ref(p.message.provider, p.message.model) for p in d.panes}
        vote = None
        if d.vote is not None:
            vote = {"verdict": d.vote.verdict, "winner_slot": d.vote.winner_slot,
                    "winner_model": models.get(d.vote.winner_slot) if d.vote.winner_slot is not None else None,
                    "voted_at": d.vote.created_at.isoformat()}  # fmt: skip
        panes = []
        for p in d.panes:
            m = p.message
            panes.append({
                "slot": p.slot, "label": blind_label(p.slot), "model": models[p.slot], "provider": m.provider,
                "model_name": m.model, "model_version": m.model_version, "system_prompt": p.system_prompt,
                "params": m.params, "text": m.content, "reasoning": m.reasoning, "finish_reason": m.finish_reason,
                "error": m.error, "ttft_ms": m.ttft_ms, "duration_ms": m.duration_ms,
                "tokens_per_second": _tps(m.output_tokens, m.duration_ms, m.ttft_ms),
                "input_tokens": m.input_tokens, "output_tokens": m.output_tokens, "cost_usd": p.cost_usd,
                "conversation_id": str(p.conversation_id), "tool_calls": m.tool_calls or None,
                "position": p.slot, "request_id": m.request_id, "sdk_version": m.sdk_version,
                "system_prompt_sha256": m.system_prompt_sha256,
            })  # fmt: skip
        out.append({"comparison_id": str(d.id), "created_at": d.created_at.isoformat(), "prompt": d.prompt,
                    "blind": d.blind, "vote": vote, "panes": panes})  # fmt: skip
    return out


def to_jsonl(details: Sequence[ComparisonDetail]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in comparison_records(details))


def csv_rows(details: Sequence[ComparisonDetail]) -> list[dict[str, Any]]:
    rows = []
    for record in comparison_records(details):
        vote = record["vote"] or {}
        for pane in record["panes"]:
            won = None
            if vote.get("verdict") == "slot":
                won = pane["slot"] == vote["winner_slot"]
            elif vote:
                won = False if vote.get("verdict") == "both_bad" else None
            rows.append({
                "comparison_id": record["comparison_id"], "created_at": record["created_at"],
                "prompt": record["prompt"], "blind": record["blind"], "slot": pane["slot"], "label": pane["label"],
                "model": pane["model"], "model_version": pane["model_version"], "system_prompt": pane["system_prompt"],
                "params": json.dumps(pane["params"]) if pane["params"] is not None else None, "text": pane["text"],
                "finish_reason": pane["finish_reason"], "error": pane["error"], "ttft_ms": pane["ttft_ms"],
                "duration_ms": pane["duration_ms"], "tokens_per_second": pane["tokens_per_second"],
                "input_tokens": pane["input_tokens"], "output_tokens": pane["output_tokens"],
                "cost_usd": pane["cost_usd"], "verdict": vote.get("verdict"), "winner_slot": vote.get("winner_slot"),
                "winner_model": vote.get("winner_model"), "won": won, "voted_at": vote.get("voted_at"),
                "conversation_id": pane["conversation_id"],
                "tool_calls": json.dumps(pane["tool_calls"], ensure_ascii=False) if pane["tool_calls"] else None,
                **{k: pane[k] for k in ("position", "request_id", "sdk_version", "system_prompt_sha256")},
            })  # fmt: skip
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    # A cell starting like a formula would run in a spreadsheet.
    return "'" + text if isinstance(value, str) and text.startswith(_FORMULA_START) else text


def to_csv(details: Sequence[ComparisonDetail]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in csv_rows(details):
        writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
    return buffer.getvalue()
