"""The `[[mcp_servers]]` tables of models.toml: MCP servers whose tools Parley's models may call.

Only parsing lives here (no `mcp` import): chat/settings.py reads these with the endpoints, and
chat/tools/mcp.py connects. A bad entry is skipped and reported, as a bad endpoint is.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Seconds a server has to start (and each of its tool calls to answer) unless the table says otherwise.
DEFAULT_MCP_TIMEOUT = 30.0
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
#: `"env:NAME"` takes the value from the environment, so a token never has to be written in the file.
_ENV_REF = "env:"


@dataclass(frozen=True)
class McpServer:
    """One MCP server: a stdio `command` (with `args`) or a streamable-HTTP `url` (with `headers`)."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    url: str | None = None
    #: Header and environment values as resolved (tokens): never shown, logged or sent to a browser.
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    cwd: str | None = None
    timeout: float = DEFAULT_MCP_TIMEOUT
    #: Only these of the server's tools are offered (None: all of them).
    tools: tuple[str, ...] | None = None

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "http"


def read_mcp_file(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> tuple[tuple[McpServer, ...], list[str]]:
    """The servers declared in the settings file (models.toml; chat/settings.py finds it), and what was wrong."""
    if not path:
        return (), []
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        return (), [f"{path}: could not read it ({e}); no MCP servers were added."]
    return read_mcp_servers(data, env, str(path))


def read_mcp_servers(data: Mapping[str, Any], env: Mapping[str, str], where: str) -> tuple[tuple[McpServer, ...], list[str]]:
    """The servers of a parsed models.toml; bad entries are skipped and reported (`where` names the file)."""
    raw = data.get("mcp_servers", [])
    if not isinstance(raw, list):
        return (), [f"{where}: `mcp_servers` must be an array of tables ([[mcp_servers]])."]
    servers: list[McpServer] = []
    problems: list[str] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw, 1):
        try:
            server = _server(entry, env)
        except ValueError as e:
            problems.append(f"{where}: mcp_servers #{i}: {e}; that server is left out.")
            continue
        if server.name in seen:
            problems.append(f"{where}: mcp_servers #{i}: the name '{server.name}' is used twice; the first one is kept.")
            continue
        seen.add(server.name)
        servers.append(server)
    return tuple(servers), problems


def _server(entry: Any, env: Mapping[str, str]) -> McpServer:
    if not isinstance(entry, dict):
        raise ValueError("must be a table")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError("`name` must be a lowercase letter then up to 31 lowercase letters, digits, '-' or '_' (it prefixes the tools' names)")
    command, url = entry.get("command"), entry.get("url")
    if bool(command) == bool(url):
        raise ValueError("give either `command` (a stdio server) or `url` (a streamable-HTTP server), not both")
    if command is not None and (not isinstance(command, str) or not command.strip()):
        raise ValueError("`command` must be a program to run, e.g. \"uvx\"")
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        raise ValueError("`url` must be an http(s) URL, e.g. http://localhost:8000/mcp")
    args = entry.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValueError("`args` must be a list of strings")
    timeout = entry.get("timeout", DEFAULT_MCP_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 600:
        raise ValueError("`timeout` must be a number of seconds from 0 to 600")
    tools = entry.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, str) and t for t in tools)):
        raise ValueError("`tools` must be a list of tool names (the ones to offer)")
    cwd = entry.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ValueError("`cwd` must be a directory")
    return McpServer(
        name=name, command=command.strip() if command else None, args=tuple(args), url=url or None,
        headers=_values(entry.get("headers"), "headers", env), env=_values(entry.get("env"), "env", env),
        cwd=cwd, timeout=float(timeout), tools=tuple(tools) if tools is not None else None,
    )


def _values(table: Any, key: str, env: Mapping[str, str]) -> dict[str, str]:
    """A table of strings; `"env:NAME"` values are read from the environment (a missing one is an error)."""
    if table is None:
        return {}
    if not isinstance(table, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
        raise ValueError(f"`{key}` must be a table of strings, e.g. {{\"Authorization\" = \"env:MY_TOKEN\"}}")
    out: dict[str, str] = {}
    for k, v in table.items():
        if v.startswith(_ENV_REF):
            var = v[len(_ENV_REF):].strip()
            value = (env.get(var) or "").strip()
            if not value:
                raise ValueError(f"`{key}.{k}` reads the environment variable {var}, which is not set")
            # "Bearer env:TOKEN" style is not parsed: the whole value comes from the variable.
            out[k] = value
        else:
            out[k] = v
    return out


def start_mcp_hub(path: str | os.PathLike[str] | None, env: Mapping[str, str]) -> tuple[Any, list[str]]:
    """The started hub of the servers in the settings file (None when it declares none), and what was wrong.

    The `mcp` package is imported only here, when servers are declared: without it they are reported, not fatal.
    """
    servers, problems = read_mcp_file(path, env)
    if not servers:
        return None, problems
    try:
        from chat.tools.mcp import McpHub
    except ImportError as e:
        return None, [*problems, f"MCP servers are declared in {path} but the `mcp` package is missing ({e}): "
                                 "pip install -r requirements.txt"]
    return McpHub(servers).start(), problems
