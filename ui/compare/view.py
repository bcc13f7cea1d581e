"""What compare mode shows: pane bubbles, metric lines and the bar charts' data (blind-safe).

In blind mode nothing built here may carry a model or provider name: labels are "Model A", error
texts are redacted and costs (which would give the model away through the price table) wait
for the vote.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import pandas as pd

from chat.types import FinishReason
from compare.engine import ReplyResult
from core.compare_run import PaneMetrics, redact
from ui.convert import NOTICE_PREFIX, REASONING_TITLE, tool_bubble
from ui.notices import notice_title

FINISH_ICONS = {
    "stop": "✅", "length": "✂️", "error": "⚠️", "cancelled": "⏹", "truncated": "✂️",
    "content_filter": "🛡️", "refusal": "🛡️", "tool_calls": "🛠", "interrupted": "⚠️",
}  # fmt: skip
#: (metric, chart title, y column); the x column is "Model" (the pane letters, A to D).
CHART_METRICS = [
    ("ttft_ms", "Time to first token", "ms"),
    ("tokens_per_second", "Speed", "tokens/s"),
    ("output_tokens", "Output tokens", "tokens"),
    ("cost", "Cost", "USD"),
]


# In blind mode an error is described by its kind only: provider messages name the provider, its
# status page or its console, in ways no list of names can foresee.
BLIND_ERRORS = {
    "auth": "the provider refused the API key",
    "unknown_model": "the provider does not know this model",
    "rate_limited": "the provider's rate limit was hit",
    "overloaded": "the provider is overloaded or failing",
    "network": "the provider could not be reached",
    "context_too_long": "the conversation is too long for this model",
    "safety": "the provider blocked the reply for safety reasons",
    "bad_request": "the provider refused the request",
    "stream": "the reply was cut off",
    "timeout": "the provider took too long",
    "first_token_timeout": "the first token took too long",
    "idle_timeout": "the stream stalled",
}


def blind_error(kind: str) -> str:
    return (f"This model failed: {BLIND_ERRORS.get(kind, 'the provider returned an error')}. The text so far is kept; "
            "the provider's own message is shown after the vote.")


def reply_bubbles(r: ReplyResult, *, hide: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The assistant bubbles of one pane's live or finished reply: reasoning and tool calls (collapsible), the answer.

    With `hide` (blind mode: the pane's names), an error is described by its kind only, and any
    name left in it, or in a tool call's arguments, result or error, is redacted as well.
    """
    bubbles: list[dict[str, Any]] = []
    tools = getattr(r, "tools", ())
    if r.reasoning:
        status = "done" if (r.text or r.done or tools) else "pending"
        bubbles.append({"role": "assistant", "content": r.reasoning, "metadata": {"title": REASONING_TITLE, "status": status}})
    bubbles.extend(tool_block(t, hide) for t in tools)
    if r.text:
        bubbles.append({"role": "assistant", "content": r.text})
    if r.error:
        message = redact(blind_error(r.error.kind), hide) if hide else r.error.message
        title = NOTICE_PREFIX + notice_title(message)
        bubbles.append({"role": "assistant", "content": message, "metadata": {"title": title, "status": "done"}})
    elif r.finish_reason == FinishReason.CANCELLED:
        bubbles.append(_note("⏹ Stopped. The reply so far is kept."))
    elif r.finish_reason == FinishReason.LENGTH:
        bubbles.append(_note("✂️ The reply reached the token limit."))
    elif r.finish_reason == FinishReason.CONTENT_FILTER:
        bubbles.append(_note("🛡️ The provider stopped this reply for safety reasons."))
    if not r.done and not r.text and not r.reasoning and not tools:
        bubbles.append({"role": "assistant", "content": "", "metadata": {"title": "Waiting for the first token…", "status": "pending"}})
    return bubbles


def tool_block(record: Any, hide: Sequence[str] = ()) -> dict[str, Any]:
    """One tool call as the chat shows it; in blind mode with the pane's names redacted.

    A tool's name is the deployment's, so it shows, but the model wrote the arguments (and may ask
    for a tool that does not exist), and a result or error may quote them: all four are redacted.
    """
    if hide:
        record = {
            "name": redact(record.name, hide), "status": record.status, "duration_ms": record.duration_ms,
            "arguments": redact(record.arguments, hide),
            "result": redact(record.result, hide) if record.result is not None else None,
            "error": redact(record.error, hide) if record.error is not None else None,
        }  # fmt: skip
    bubble = tool_bubble(record)
    return {"role": "assistant", "content": bubble.content, "metadata": dict(bubble.metadata or {})}


def _note(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": "", "metadata": {"title": text, "status": "done"}}


def _seconds(ms: float | None) -> str:
    return "–" if ms is None else f"{ms / 1000:.2f} s"


def format_cost(cost: float | None) -> str:
    if cost is None:
        return "–"
    if cost == 0:
        return "$0"
    return f"${cost:.4f}" if cost >= 0.0001 else f"${cost:.6f}"


def metrics_markdown(m: PaneMetrics | None, *, live: bool, show_cost: bool) -> str:
    """The metric line under a pane (no model name: the header carries it)."""
    if m is None:
        return ""
    approx = "~" if m.usage_estimated else ""  # Parley's estimate until the provider's usage arrives
    tps = "–" if not m.tokens_per_second else f"{approx}{m.tokens_per_second:.0f}"
    tokens = "–" if m.output_tokens is None else f"{approx}{m.output_tokens}"
    if live:
        state = "⏳ streaming"
    else:
        reason = m.finish_reason or "cancelled"
        state = f"{FINISH_ICONS.get(reason, '•')} {reason}"
    if not show_cost:
        cost = "after the vote"
    elif m.cost is None and not live:
        cost = "no price"
    else:
        cost = format_cost(m.cost)
    cells = [
        ("first token", _seconds(m.ttft_ms)), ("tok/s", tps), ("tokens", tokens),
        ("time", _seconds(m.duration_ms)), ("finish", state), ("cost", cost),
    ]  # fmt: skip
    return "<div class='cmp-metrics'>" + "".join(
        f"<span class='cmp-metric'><small>{html.escape(k)}</small><b>{html.escape(v)}</b></span>" for k, v in cells
    ) + "</div>"


def header_markdown(label: str, name: str | None, detail: str = "") -> str:
    """A pane's title: "Model A" in blind mode, else (or once revealed) the model's name."""
    if name is None:
        return f"### {label}"
    title = f"### {label} · {name}" if label else f"### {name}"
    return title + (f"\n<span class='parley-muted'>{html.escape(detail)}</span>" if detail else "")


def chart_frames(letters: Sequence[str], metrics: Sequence[PaneMetrics], *, show_cost: bool) -> dict[str, pd.DataFrame]:
    """One small frame per chart (Model, <unit>), keyed by metric; cost only when it may be shown.

    The x values are the pane letters only: the pane headers say which model each letter is.
    """
    frames: dict[str, pd.DataFrame] = {}
    for key, _title, unit in CHART_METRICS:
        rows = [] if key == "cost" and not show_cost else [
            {"Model": letter, unit: float(getattr(m, key))} for letter, m in zip(letters, metrics)
            if getattr(m, key) is not None]  # fmt: skip
        frames[key] = pd.DataFrame(rows, columns=["Model", unit]).astype({"Model": "str", unit: "float64"})
    return frames
