"""A small MCP server for the tests (FastMCP, the official SDK): `python -m tests.fakes.mcp_tools stdio|http PORT`.

Its tools: `add` (two integers), `shout` (text in capitals), `whoami` (the Authorization header it was sent,
over HTTP; proves headers from the settings reach the server) and `fail` (an error result).
"""

from __future__ import annotations

import os
import sys

from mcp.server.fastmcp import Context, FastMCP

server = FastMCP("parley-test-tools")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """The text in capital letters."""
    return text.upper()


@server.tool()
def whoami(ctx: Context) -> str:  # type: ignore[type-arg]
    """The Authorization header of the request (HTTP), or the process id (stdio)."""
    request = ctx.request_context.request
    if request is None:
        return f"pid {os.getpid()}"
    return request.headers.get("authorization", "none")


@server.tool()
def fail(reason: str = "no reason") -> str:
    """Always fails with the reason given."""
    raise ValueError(f"failed on purpose: {reason}")


def main(argv: list[str]) -> None:
    if argv[:1] == ["http"]:
        server.settings.host = "127.0.0.1"
        server.settings.port = int(argv[1])
        server.run("streamable-http")
    else:
        server.run("stdio")


if __name__ == "__main__":
    main(sys.argv[1:])
