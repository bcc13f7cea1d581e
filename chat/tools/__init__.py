"""Tools a model may call: typed functions with a pydantic argument model, and the built-in ones.

Run them with `chat.toolloop.ToolLoop`. Nothing here imports storage: the conversation search is a
function the UI lends per run through `ToolContext(owner=..., search=...)`.
"""

from chat.tools.base import (
    DEFAULT_TIMEOUT,
    MAX_RESULT_CHARS,
    SearchFn,
    Tool,
    Toolbox,
    ToolContext,
    ToolError,
    ToolsModuleError,
    result_text,
    tool,
)
from chat.tools.calculator import calculate, calculator, evaluate
from chat.tools.clock import current_time
from chat.tools.loader import TOOLS_MODULE_VAR, builtin_tools, default_toolbox, load_tools_module, toolbox_from_env
from chat.tools.schema import argument_schema
from chat.tools.search import search_conversations

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_RESULT_CHARS",
    "TOOLS_MODULE_VAR",
    "SearchFn",
    "Tool",
    "ToolContext",
    "ToolError",
    "Toolbox",
    "ToolsModuleError",
    "argument_schema",
    "builtin_tools",
    "calculate",
    "calculator",
    "current_time",
    "default_toolbox",
    "evaluate",
    "load_tools_module",
    "result_text",
    "search_conversations",
    "tool",
    "toolbox_from_env",
]
