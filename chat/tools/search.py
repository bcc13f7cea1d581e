"""Search the user's own saved conversations, through a search function the UI lends for the run."""

from __future__ import annotations

import asyncio
import html
import inspect
import re
from typing import Any

from pydantic import BaseModel, Field

from chat.tools.base import Tool, ToolContext, ToolError

MAX_HITS = 20
_TAGS = re.compile(r"</?mark>")


class SearchArgs(BaseModel):
    query: str = Field(min_length=1, max_length=200, description="Words to look for in the user's saved messages.")
    limit: int = Field(default=5, ge=1, le=MAX_HITS, description="How many matching messages to return.")


def _available(ctx: ToolContext) -> bool:
    return ctx.search is not None and bool(ctx.owner)


async def _search_conversations(args: SearchArgs, ctx: ToolContext) -> Any:
    # The owner comes from the run's context, never from the model: a model cannot search someone else's data.
    if ctx.search is None or not ctx.owner:
        raise ToolError("Searching saved conversations is not available here.")
    if inspect.iscoroutinefunction(ctx.search):
        found = await ctx.search(ctx.owner, args.query, args.limit)
    else:
        # A sync search (the repository behind a database session) blocks: keep it off the event loop.
        found = await asyncio.to_thread(ctx.search, ctx.owner, args.query, args.limit)
        if inspect.isawaitable(found):
            found = await found
    hits = [_plain(h) for h in list(found or [])[: args.limit]]
    if not hits:
        return f"No saved messages match {args.query!r}."
    return hits


def _plain(hit: Any) -> dict[str, Any]:
    """One hit as plain JSON fields; the <mark> highlighting of storage snippets is removed for the model."""
    data = hit.model_dump() if hasattr(hit, "model_dump") else dict(hit)
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, str) and "<mark>" in value:
            value = html.unescape(_TAGS.sub("", value))
        out[str(key)] = value if isinstance(value, (str, int, float, bool)) else str(value)
    return out


search_conversations = Tool.from_function(
    _search_conversations,
    name="search_conversations",
    description="Search the user's own saved conversations for messages containing words, newest first. "
    "Returns the conversation title, the role and a snippet of each matching message.",
    timeout=10.0,
    available=_available,
)
