"""One engine for a compare pane and a batch pair: one prompt against one model with params, maybe with tools.

Both surfaces build the same messages, pick a `Turn` or a `ToolLoop` by the same rule and read the
same speed and attempt figures from the result, so a pane and a batch row of one reply agree.
No Gradio and no database: core/compare_run.py (compare panes) and compare/batch.py (batch pairs,
the `python -m compare.batch` CLI) both use it.
"""

from __future__ import annotations

from collections.abc import Sequence

from chat.providers.base import Provider
from chat.toolloop import ToolLoop, ToolLoopResult
from chat.tools import Toolbox, ToolContext
from chat.turn import Turn, TurnPolicy, TurnResult
from chat.types import Message, ModelInfo, Params

#: One reply (a compare pane's, a batch pair's), and what it fills in as it runs.
Reply = Turn | ToolLoop
ReplyResult = TurnResult | ToolLoopResult


def prompt_messages(prompt: str, *, system: str | None = None, history: Sequence[Message] = ()) -> list[Message]:
    """The messages sent for one prompt: the system prompt (if any), earlier turns, then the prompt."""
    head = [Message(role="system", content=system)] if system else []
    return [*head, *history, Message(role="user", content=prompt)]


def uses_tools(info: ModelInfo, toolbox: Toolbox | None) -> bool:
    """Whether a reply of this model may call tools: a toolbox is offered and the model supports tools."""
    return toolbox is not None and info.supports_tools


def start_reply(provider: Provider, info: ModelInfo, messages: list[Message], params: Params, *,
                policy: TurnPolicy | None = None, toolbox: Toolbox | None = None,
                context: ToolContext | None = None) -> Reply:
    """A `ToolLoop` when the model may call tools (`uses_tools`), else a plain `Turn`; neither started yet."""
    if toolbox is not None and uses_tools(info, toolbox):
        return ToolLoop(provider, info, messages, params, tools=toolbox, context=context, policy=policy)
    return Turn(provider, info, messages, params, policy=policy)


def speed_of(result: ReplyResult) -> float | None:
    """Tokens per second of a turn, or of a tool loop's last step (as the chat shows it)."""
    if isinstance(result, TurnResult):
        return result.tokens_per_second
    step = result.turn
    return step.tokens_per_second if step is not None else None


def attempts_of(result: ReplyResult) -> int:
    """Tries made: a turn's, or the sum over a tool loop's steps (1 = no retry)."""
    if isinstance(result, TurnResult):
        return result.attempts
    return sum(t.attempts for t in result.steps)
