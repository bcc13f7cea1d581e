"""What chat and compare share to run tools: the owner-scoped store a tool may search, and tool calls as stored."""

from __future__ import annotations

from typing import Any

from chat.tools import SearchFn
from core.services import Services
from storage import repository as repo


def tool_record(t: Any) -> dict[str, Any]:
    """A tool call as stored with the reply."""
    return {
        "id": (t.id or t.key)[:200], "name": (t.name or "tool")[:200], "arguments": (t.arguments or "{}")[:100_000],
        "result": t.result[:1_000_000] if t.result is not None else None,
        "error": t.error[:100_000] if t.error is not None else ("stopped" if t.status == "cancelled" else None),
        "duration_ms": max(int(t.duration_ms), 0) if t.duration_ms is not None else None,
    }


def tool_records(result: Any) -> list[dict[str, Any]] | None:
    """Every tool call of a reply as stored, or None for a reply without any (a plain turn has none)."""
    return [tool_record(t) for t in getattr(result, "tools", ())] or None


def owner_search(services: Services) -> SearchFn:
    """The conversation-search tool's view of the store: `search(owner, query, limit)` over that owner's messages.

    The tool passes the owner of its run's context, never one the model names.
    """

    async def search(owner: str, query: str, limit: int) -> list[dict[str, Any]]:
        hits = await services.db(repo.search_messages, owner=owner, query=query, limit=limit)
        return [{"conversation": h.title, "role": h.role, "snippet": h.snippet, "when": h.created_at.isoformat()}
                for h in hits]  # fmt: skip

    return search

