"""Parley as an MCP server (PARLEY_MCP=on or `python app.py --mcp`): four tools over Gradio's MCP support.

`chat`, `compare`, `leaderboard` and `batch` are thin `gr.api` functions over the same use cases as the
browser (core.chat, core.compare, core.batch through core.mcp_tools), so moderation, rate limits and
saving apply as there; provider keys stay on the server (no tool takes or returns one). Gradio names an
MCP tool after its function and describes it from the docstring's Args, which is why the functions
are named as the tools are. They run unqueued (`queue=False`): Gradio then calls them in the MCP
request itself, with that request (its Authorization header) as their `gr.Request`, where a queued
call would loop back through gradio_client without the caller's login.

`McpGuard` (ASGI middleware) stands in front of Gradio's MCP routes, which check no login: with
APP_USERS set a request without valid HTTP Basic credentials is answered 401 before Gradio sees it, and
every request is limited to the four tools with Gradio's own `?tools=` filter, so the app's other
public endpoints (/chat, /send, /compare, /leaderboard) are neither listed nor callable as tools.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import aclosing
from typing import Any
from urllib.parse import parse_qsl, urlencode

import gradio as gr
from gradio.events import api

from compare.pricing import PriceTable
from core.batch import Batches
from core.chat import ChatTurns, Flagged, Refused, Update
from core.compare import CompareProblem, Comparisons
from core.mcp_tools import RemoteRefused, basic_user, blind_panes, remote_owner, small_batch
from core.params import ParamInputs
from core.services import Services
from core.usage import usage_columns, usage_of
from storage.errors import StorageError

#: The tools, by function name (what Gradio calls them); their API endpoints are "mcp_<name>".
TOOLS = ("chat", "compare", "leaderboard", "batch")
MCP_PATH = "/gradio_api/mcp"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def register_tools(services: Services, turns: ChatTurns) -> None:
    """Add the four tools to the Blocks being built (call inside `with demo:`); only when the MCP server is on."""
    # Gradio warns at launch that the chat's endpoint has a gr.State input "tool": it is no tool here (McpGuard).
    warnings.filterwarnings("ignore", message="This MCP server includes a tool that has a gr.State input")
    comparisons = Comparisons(services, PriceTable.from_env())  # the default prices, as the /compare API's
    batches = Batches(services)
    users = services.config.users

    def owner_of(request: gr.Request | None) -> str:
        headers = getattr(request, "headers", None) or {}
        try:
            return remote_owner(login=getattr(request, "username", None), authorization=headers.get("authorization"),
                                users=users)
        except RemoteRefused as e:
            raise gr.Error(e.message, print_exception=False) from None

    async def chat(message: str, model: str = "", system_prompt: str = "", conversation_id: str = "",
                   max_tokens: int | None = None, temperature: float | None = None, tools: bool = False,
                   request: gr.Request = None) -> str:  # type: ignore[assignment]  # Gradio fills it in
        """Send a message to a language model through Parley and get its whole reply, with token usage.

        Args:
            message: The message to send.
            model: The model as provider:model, e.g. openai:gpt-4o-mini or anthropic:claude-sonnet-4-5; empty for Parley's default model.
            system_prompt: Instructions for the model (optional).
            conversation_id: Continue this conversation of yours (the conversation_id of an earlier reply; signed-in callers only); empty for a new one.
            max_tokens: The longest reply in tokens (optional).
            temperature: Sampling temperature from 0 to 2 (optional; some models take none).
            tools: Let the model call Parley's tools (calculator, clock, search, MCP servers) if it supports tools.
        Returns:
            JSON: reply, model, finish_reason, error, conversation_id, notes and token usage (input_tokens, output_tokens, ...).
        """
        owner = owner_of(request)
        events = turns.send(owner=owner, identity=services.limiter.identity(request, owner), text=message or "",
                            model=model or "", system_prompt=system_prompt or "",
                            params=ParamInputs(temperature, None, max_tokens, None, "default"), tools=bool(tools),
                            conversation_id=(conversation_id or "").strip() or None, parent_id="")
        last = None
        async with aclosing(events):
            async for event in events:
                last = event
        if last is None or isinstance(last, Refused):
            raise gr.Error(last.message if last else "Nothing was sent.", print_exception=False)
        out = {"conversation_id": last.conversation_id, "notes": list(last.notes)}
        if isinstance(last, Flagged):
            return _json({"reply": last.reply, "model": None, "finish_reason": "content_filter", "error": None, **out})
        assert isinstance(last, Update)  # noqa: S101  (the only event left)
        r = last.result
        return _json({"reply": r.text, "model": r.ref, "finish_reason": r.finish_reason.value if r.finish_reason else None,
                      "error": r.error.message if r.error else None, **out, **usage_columns(usage_of(r))})

    async def compare(message: str, models: list[str], system_prompt: str = "", blind: bool = False,
                      request: gr.Request = None) -> str:  # type: ignore[assignment]  # Gradio fills it in
        """Send one prompt to 2 to 4 models at once through Parley and compare their replies and speed.

        Args:
            message: The prompt every model gets.
            models: 2 to 4 models as provider:model, e.g. ["openai:gpt-4o-mini", "anthropic:claude-sonnet-4-5"].
            system_prompt: Instructions every model gets (optional).
            blind: Hide which model wrote which reply: panes are labelled Model A, Model B... in a random order, with no names or costs.
        Returns:
            JSON: blind and panes: per model its text, time to first token, tokens per second, tokens, duration
            finish reason, error and (not blind) model, cost and pane position.
        """
        owner = owner_of(request)
        try:
            items = await comparisons.compare(owner=owner, request=request, message=message or "", models=models,
                                              system_prompt=system_prompt or "")
        except CompareProblem as e:
            raise gr.Error(e.message, print_exception=False) from None
        return _json({"blind": bool(blind), "panes": blind_panes(items) if blind else items})

    async def leaderboard(blind_only: bool = False, style: bool = True,
                          request: gr.Request = None) -> str:  # type: ignore[assignment]  # Gradio fills it in
        """Parley's model leaderboard from the comparison votes: Bradley-Terry ratings with 95% intervals and ranks.

        Args:
            blind_only: Count only votes from blind comparisons.
            style: Also give the style-controlled ratings (length and markdown taken out).
        Returns:
            JSON: votes, battles, ratings (rank, model, rating, ci, votes, win_rate), position_bias and more.
        """
        owner = owner_of(request)
        try:
            standings = await comparisons.standings(owner=owner, blind_only=bool(blind_only), style=bool(style))
        except StorageError as e:
            raise gr.Error(e.message, print_exception=False) from e
        return _json({"votes": standings.votes, "shared": standings.shared, **standings.result.as_dict()})

    async def batch(prompts: list[str], models: list[str], references: list[str] | None = None,
                    system_prompt: str = "", max_tokens: int | None = None,
                    request: gr.Request = None) -> str:  # type: ignore[assignment]  # Gradio fills it in
        """Run a small scored batch through Parley: every prompt to every model, replies scored against references.

        Args:
            prompts: 1 to 20 prompts.
            models: 1 to 4 models as provider:model (at most 40 calls in all).
            references: The expected answer per prompt, same order ("" for none); a reply scores 1 if it is that text (case, outer spaces ignored).
            system_prompt: Instructions every model gets (optional).
            max_tokens: The longest reply in tokens (optional).
        Returns:
            JSON: summary (per model: done, errors, latency, tokens, cost, mean score with a 95% interval; paired comparisons) and replies.
        """
        owner = owner_of(request)
        try:
            return _json(await small_batch(batches, owner=owner, request=request, prompts=prompts, models=models,
                                     references=references, system_prompt=system_prompt or "", max_tokens=max_tokens))
        except RemoteRefused as e:
            raise gr.Error(e.message, print_exception=False) from None

    for fn in (chat, compare, leaderboard, batch):
        api(fn, api_name=f"mcp_{fn.__name__}", queue=False)


def _json(value: dict[str, Any]) -> str:
    """A tool's answer as JSON text (Gradio would hand an MCP client a dict as its Python repr)."""
    return json.dumps(value, ensure_ascii=False, default=str)


class McpGuard:
    """In front of Gradio's MCP routes: 404 when the MCP server is off, 401 without a login when one is needed,
    and only Parley's four tools listed or callable."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], services: Services):
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope.get("type") != "http" or not (path == MCP_PATH or path.startswith(MCP_PATH + "/")):
            await self.app(scope, receive, send)
            return
        config = self.services.config
        if not config.mcp_server:  # even GRADIO_MCP_SERVER=true must not open tools without Parley's checks
            await _answer(send, 404, b"Not Found", {})
            return
        if config.users and not basic_user(_header(scope, b"authorization"), config.users):
            await _answer(send, 401, b'{"error": "Sign in with HTTP Basic credentials of an APP_USERS user."}',
                          {b"www-authenticate": b'Basic realm="Parley MCP"', b"content-type": b"application/json"})
            return
        await self.app(_only_our_tools(scope), receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _only_our_tools(scope: Scope) -> Scope:
    """The request with `tools=` limited to Parley's four (a client's own narrower choice is kept)."""
    query = parse_qsl(bytes(scope.get("query_string", b"")).decode("latin-1"), keep_blank_values=True)
    asked = next((v for k, v in query if k == "tools"), None)
    chosen = [t for t in (asked.split(",") if asked is not None else TOOLS) if t in TOOLS]
    query = [(k, v) for k, v in query if k != "tools"] + [("tools", ",".join(chosen) or "none")]
    return {**scope, "query_string": urlencode(query).encode("latin-1")}


async def _answer(send: Send, status: int, body: bytes, headers: dict[bytes, bytes]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers.items(), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def middleware(services: Services) -> Any:
    """The entry for `launch(app_kwargs={"middleware": [...]})`."""
    from starlette.middleware import Middleware

    return Middleware(McpGuard, services=services)
