"""One engine for a compare pane and a batch pair: one prompt against one model with params, maybe with tools.

Both surfaces build the same messages, pick a `Turn` or a `ToolLoop` by the same rule and read the
same speed and attempt figures from the result, so a pane and a batch row of one reply agree.
No Gradio and no database: core/compare_run.py (compare panes) and compare/batch.py (batch pairs,
the `python -m compare.batch` CLI) both use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from chat.errors import InvalidInput
from chat.providers.base import Provider
from chat.toolloop import ToolLoop, ToolLoopResult
from chat.tools import Toolbox, ToolContext
from chat.turn import Turn, TurnPolicy, TurnResult
from chat.types import Attachment, Message, ModelInfo, Params

if TYPE_CHECKING:
    from chat.registry import Registry

#: One reply (a compare pane's, a batch pair's), and what it fills in as it runs.
Reply = Turn | ToolLoop
ReplyResult = TurnResult | ToolLoopResult


def prompt_messages(prompt: str, *, system: str | None = None, history: Sequence[Message] = (),
                    attachments: Sequence[Attachment] = ()) -> list[Message]:
    """The messages sent for one prompt: the system prompt (if any), earlier turns, then the prompt (with its files)."""
    head = [Message(role="system", content=system)] if system else []
    return [*head, *history, Message(role="user", content=prompt, attachments=tuple(attachments))]


# -- which model reads which file (the chat, compare panes and batch pairs share the rule) -------------

#: Capable models named in a refusal at most; the rest are counted.
NAMED_MODELS = 8


class UnsupportedFile(InvalidInput):
    """A compare pane or batch pair not run: its model cannot read the prompt's files (nothing was sent)."""

    kind = "unsupported_file"


def unreadable(info: ModelInfo, attachments: Iterable[Attachment]) -> list[Attachment]:
    """The files `info`'s model cannot be sent: images without `vision`, PDFs with no text without `pdf`.

    Text files go to every model as text, and a PDF with text goes as its extracted text to a
    model that takes no PDFs (`sent_as_text` names those), so neither is ever refused here.
    """
    return [a for a in attachments
            if (a.kind == "image" and not info.vision) or (a.kind == "pdf" and not info.pdf and not (a.text or "").strip())]


def sent_as_text(info: ModelInfo, attachments: Iterable[Attachment]) -> list[Attachment]:
    """The PDFs `info`'s model gets as their extracted text (it takes no PDF files)."""
    return [a for a in attachments if a.kind == "pdf" and not info.pdf and (a.text or "").strip()]


def capable_models(registry: Registry, kind: str) -> list[str]:
    """provider:model of every listed model that reads `kind` ("image" or "pdf") natively."""
    refs: list[str] = []
    for infos in registry.cached_models().values():
        for info in infos:
            if (info.vision if kind == "image" else info.pdf) and info.ref not in refs:
                refs.append(info.ref)
    return refs


def _names(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def file_refusal(info: ModelInfo, attachments: Sequence[Attachment], registry: Registry) -> str | None:
    """Why `info`'s model cannot take these files, naming the configured models that can; None when it can."""
    bad = unreadable(info, attachments)
    if not bad:
        return None
    images = [a.name for a in bad if a.kind == "image"]
    scans = [a.name for a in bad if a.kind == "pdf"]
    parts: list[str] = []
    for names, what, cannot, kind, flag in (
        (images, ("is an image", "are images"), "read images", "image", "vision"),
        (scans, ("is a PDF without a text layer", "are PDFs without a text layer"), "read PDF files", "pdf", "pdf"),
    ):
        if not names:
            continue
        able = [ref for ref in capable_models(registry, kind) if ref != info.ref]
        said = f"{_names(names)} {what[0] if len(names) == 1 else what[1]}, and {info.ref} cannot {cannot}."
        if able:
            shown = ", ".join(able[:NAMED_MODELS]) + (f" and {len(able) - NAMED_MODELS} more" if len(able) > NAMED_MODELS else "")
            said += f" Models that can: {shown}."
        else:
            said += f" No configured model can (a compatible endpoint says so with `{flag} = true` in models.toml)."
        parts.append(said)
    return " ".join(parts) + " Choose another model or remove the file; nothing was sent."


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
