"""The toolbox a deployment offers: the built-in tools plus an operator's own module (PARLEY_TOOLS_MODULE)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping

from chat.tools.base import Tool, Toolbox, ToolsModuleError
from chat.tools.calculator import calculator
from chat.tools.clock import current_time
from chat.tools.search import search_conversations

TOOLS_MODULE_VAR = "PARLEY_TOOLS_MODULE"


def builtin_tools() -> list[Tool]:
    """The tools that ship with Parley: calculator, current time, search of the user's saved conversations."""
    return [calculator, current_time, search_conversations]


def load_tools_module(name: str) -> list[Tool]:
    """The `TOOLS` list of an importable module (`package.module`): Tool objects or @tool-decorated functions.

    Plain typed functions with a docstring are accepted too. Raises ToolsModuleError with what to fix.
    """
    name = name.strip()
    try:
        module = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any import failure is reported the same way
        raise ToolsModuleError(
            f"{TOOLS_MODULE_VAR}={name} could not be imported ({type(e).__name__}: {e}). "
            "Check the module name and that it is on the Python path."
        ) from e
    items = getattr(module, "TOOLS", None)
    if not isinstance(items, (list, tuple)):
        raise ToolsModuleError(f"{TOOLS_MODULE_VAR}={name} must define TOOLS, a list of tools decorated with @tool.")
    tools: list[Tool] = []
    for item in items:
        if isinstance(item, Tool):
            tools.append(item)
        elif callable(item):
            try:
                tools.append(Tool.from_function(item))
            except TypeError as e:
                raise ToolsModuleError(f"{TOOLS_MODULE_VAR}={name}: {e}") from e
        else:
            raise ToolsModuleError(f"{TOOLS_MODULE_VAR}={name}: TOOLS holds {item!r}, which is not a tool.")
    return tools


def default_toolbox(module: str | None = None) -> Toolbox:
    """The built-in tools plus those of `module` (a name clash with a built-in is an error, not an override)."""
    tools = builtin_tools()
    if module:
        tools += load_tools_module(module)
    try:
        return Toolbox(tools)
    except ValueError as e:
        raise ToolsModuleError(f"{TOOLS_MODULE_VAR}={module}: {e}; rename one of them.") from e


def toolbox_from_env(env: Mapping[str, str] | None = None) -> Toolbox:
    """The toolbox for this deployment, reading PARLEY_TOOLS_MODULE from `env` (default: os.environ)."""
    env = os.environ if env is None else env
    module = (env.get(TOOLS_MODULE_VAR) or "").strip() or None
    return default_toolbox(module)
