"""MCP servers' tools beside the built-in ones: an adapter from `[[mcp_servers]]` to the Toolbox.

`McpHub` keeps one session per server alive in a thread with its own event loop: an MCP session
(anyio task groups, a child process for stdio) must live and die in the task that opened it, and a
server that hangs or dies must not touch the loop that streams replies. Tool calls from the app's
loop are handed over and awaited. A server that cannot start, or dies, is reported (a notice with
the reply, an error as the tool's result) and reconnected in the background; the chat goes on.
No other module imports `mcp` (import-linter contract).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import re
import threading
import time
from collections.abc import Coroutine, Iterable
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any, TypeVar

import httpx
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import get_default_environment, stdio_client
from mcp.client.streamable_http import streamable_http_client
from pydantic import BaseModel, ConfigDict

from chat.tools.base import Tool, ToolError
from chat.tools.mcp_config import McpServer
from chat.tools.schema import SchemaError, clean_schema

log = logging.getLogger("parley.mcp")

T = TypeVar("T")
#: Seconds before a server that failed is tried again (when a reply asks for the tools).
RETRY_AFTER = 5.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class McpArguments(BaseModel):
    """Whatever the model sends: the server checks its own arguments and says what is wrong."""

    model_config = ConfigDict(extra="allow")


def tool_name(server: str, name: str) -> str:
    """`server__tool`, as every provider accepts it (letters, digits, _ and -; 64 at most)."""
    return f"{server}__{_UNSAFE.sub('_', name)}"[:64]


def _reason(e: BaseException) -> str:
    """One line for people: the first real error inside anyio's exception groups."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:300] if text else type(e).__name__


def result_text(result: types.CallToolResult) -> str:
    """A tool's answer as text for the model; an error answer raises ToolError with the server's words."""
    parts: list[str] = []
    for c in result.content:
        if isinstance(c, types.TextContent):
            parts.append(c.text)
        elif isinstance(c, types.EmbeddedResource) and isinstance(c.resource, types.TextResourceContents):
            parts.append(c.resource.text)
        else:  # images, audio and links cannot go back to every provider as a tool result
            mime = getattr(c, "mimeType", None)
            parts.append(f"[{c.type}: {mime}]" if mime else f"[{c.type}]")
    text = "\n".join(parts)
    if not text and result.structuredContent is not None:
        text = json.dumps(result.structuredContent, ensure_ascii=False)
    if result.isError:
        raise ToolError(text or "The tool reported an error without a message.")
    return text


class _Connection:
    """One server's session, held open by a task in the hub's loop until `stop`."""

    def __init__(self, hub: McpHub, server: McpServer):
        self.hub = hub
        self.server = server
        self.session: ClientSession | None = None
        self.tools: list[Tool] = []
        self.error: str | None = None
        self.failed_at = 0.0
        self._ready: asyncio.Future[None] | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.server.name

    # -- in the hub's loop ---------------------------------------------------------------------

    async def ensure(self) -> ClientSession:
        """The open session, starting the server if needed; ToolError when it cannot start in time."""
        if self.session is not None:
            return self.session
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._ready = loop.create_future()
            self._stop = asyncio.Event()
            self._task = loop.create_task(self._hold(self._ready, self._stop), name=f"mcp-{self.name}")
        assert self._ready is not None  # noqa: S101  (set with the task)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.server.timeout)
        except TimeoutError:
            self._fail(f"it did not start within {self.server.timeout:g} s")
            await self.stop()
        except Exception:  # noqa: BLE001 - `_hold` recorded why
            pass
        if self.session is None:
            raise ToolError(self.unavailable())
        return self.session

    async def _hold(self, ready: asyncio.Future[None], stop: asyncio.Event) -> None:
        try:
            async with AsyncExitStack() as stack:
                streams = await stack.enter_async_context(self._transport(stack))
                session = await stack.enter_async_context(ClientSession(
                    streams[0], streams[1], read_timeout_seconds=timedelta(seconds=self.server.timeout)))
                await session.initialize()
                listed = await session.list_tools()
                self.tools = self._adapt(listed.tools)
                self.session, self.error = session, None
                log.info("MCP server %s: connected (%s), %d tools", self.name, self.server.transport, len(self.tools))
                if not ready.done():
                    ready.set_result(None)
                await stop.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - a server's failure is reported, never raised into the app
            self._fail(_reason(e))
        finally:
            self.session, self.tools = None, []
            if not ready.done():
                ready.set_exception(ToolError(self.unavailable()))
                ready.exception()  # retrieved: nobody may be waiting any more

    def _transport(self, stack: AsyncExitStack) -> Any:
        s = self.server
        if s.command:
            env = {**get_default_environment(), **s.env}
            return stdio_client(StdioServerParameters(command=s.command, args=list(s.args), env=env, cwd=s.cwd))
        assert s.url is not None  # noqa: S101  (mcp_config requires one of the two)
        client = httpx.AsyncClient(headers=s.headers, timeout=httpx.Timeout(s.timeout), follow_redirects=True)
        stack.push_async_callback(client.aclose)
        return streamable_http_client(s.url, http_client=client)

    def _adapt(self, listed: Iterable[types.Tool]) -> list[Tool]:
        tools = []
        for t in listed:
            if self.server.tools is not None and t.name not in self.server.tools:
                continue
            try:
                schema = clean_schema(dict(t.inputSchema or {"type": "object"}))
            except SchemaError as e:
                log.warning("MCP server %s: tool %s left out (%s)", self.name, t.name, e)
                continue
            description = (t.description or t.title or t.name).strip()
            tools.append(Tool(
                name=tool_name(self.name, t.name), args=McpArguments, fn=self._caller(t.name),
                description=f"{description}\n(Tool `{t.name}` of the MCP server '{self.name}'.)",
                timeout=self.server.timeout, _style="model", _schema=schema,
            ))
        return tools

    def _caller(self, name: str) -> Any:
        async def call(args: McpArguments) -> str:
            return await self.hub.run(self.call(name, args.model_dump()))

        return call

    async def call(self, name: str, arguments: dict[str, Any]) -> str:
        session = await self.ensure()
        holder = self._task
        asked = asyncio.ensure_future(session.call_tool(name, arguments))
        try:
            # An HTTP server that dies ends the session's task, but leaves the request waiting for its
            # timeout: the call ends as soon as either does.
            await asyncio.wait({asked, holder} if holder is not None else {asked}, return_when=asyncio.FIRST_COMPLETED)
            if not asked.done():
                raise ConnectionError(self.error or "the connection closed")
            result = asked.result()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the transport broke (the server died or hung): start afresh
            why = _reason(e)
            self._fail(f"it stopped answering ({why})")
            await self.stop()
            self.hub.spawn(self.ensure())  # back for the next reply if it can start again
            raise ToolError(f"The MCP server '{self.name}' stopped answering ({why}). The call did not "
                            "complete; Parley is restarting the server.") from e
        finally:
            if not asked.done():
                asked.cancel()
                await asyncio.gather(asked, return_exceptions=True)
        return result_text(result)

    async def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        task = self._task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), 5.0)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            except BaseException:  # noqa: BLE001, S110 - its failure is recorded by _hold
                pass

    # -- from any thread -----------------------------------------------------------------------

    def _fail(self, why: str) -> None:
        self.error = why
        self.failed_at = time.monotonic()
        log.warning("MCP server %s: %s", self.name, why)

    def unavailable(self) -> str:
        return (f"The MCP server '{self.name}' is unavailable: {self.error or 'it is not running'}. "
                "Its tools are left out; the chat goes on without them.")


class McpHub:
    """Every configured MCP server, as a source of tools for the Toolbox (`tools()` and `notices()`)."""

    def __init__(self, servers: Iterable[McpServer]):
        self.connections = [_Connection(self, s) for s in servers]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="parley-mcp", daemon=True)
        self._closed = False

    def start(self) -> McpHub:
        """Start the thread and every server in the background (the app does not wait for them)."""
        self._thread.start()
        for c in self.connections:
            self.spawn(c.ensure())
        return self

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run `coro` in the hub's loop without waiting; its failure is already recorded by the connection."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` in the hub's loop from another loop (cancelling this cancels it there)."""
        if asyncio.get_running_loop() is self._loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def tools(self) -> list[Tool]:
        """The tools of the servers connected now; a failed server is retried (in the background) every RETRY_AFTER s."""
        tools: list[Tool] = []
        for c in self.connections:
            if c.session is not None:
                tools += c.tools
            elif not self._closed and c.error and time.monotonic() - c.failed_at >= RETRY_AFTER:
                c.failed_at = time.monotonic()
                self.spawn(c.ensure())
        return tools

    def notices(self) -> list[str]:
        return [c.unavailable() for c in self.connections if c.session is None and c.error]

    def wait_ready(self, timeout: float) -> bool:
        """Block until every server has connected or failed (for tests and the CLI); whether all are up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(c.session is not None or c.error for c in self.connections):
                break
            time.sleep(0.05)
        return all(c.session is not None for c in self.connections)

    def close(self, timeout: float = 10.0) -> None:
        """Close every session (stdio servers are stopped) and the thread."""
        if self._closed or not self._thread.is_alive():
            self._closed = True
            return
        self._closed = True

        async def stop_all() -> None:
            await asyncio.gather(*(c.stop() for c in self.connections), return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(stop_all(), self._loop).result(timeout)
        except (concurrent.futures.TimeoutError, RuntimeError) as e:
            log.warning("MCP servers did not all close in %g s (%s)", timeout, e)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)


__all__ = ["McpArguments", "McpHub", "result_text", "tool_name"]
