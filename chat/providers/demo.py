"""An offline provider: streams a fixed, honest reply so the app works with no key at all."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Sequence

from chat.providers.base import Provider
from chat.types import (
    Attachment,
    Finish,
    FinishReason,
    Message,
    ModelInfo,
    Params,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolSpec,
    Usage,
)

DEMO_MODEL = "parley-demo"
REASONING_MODEL = "reasoning-demo"

_PARAMS = frozenset({"temperature", "top_p", "max_tokens", "seed"})
_ECHO_LIMIT = 200
# Pieces of text as the demo "tokenizes" them: a word with its leading space, or a run of newlines.
_TOKEN = re.compile(r"\s*\S+|\s+")


_BRACKETS = str.maketrans({"(": "&#40;", ")": "&#41;", "[": "&#91;", "]": "&#93;"})


def escape_inline(text: str) -> str:
    """Text made inert for markdown and HTML: every punctuation character that could start markup is escaped."""
    text = " ".join(text.split())  # newlines would end the blockquote
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # Brackets become entities, not backslash escapes: the chat renders \( … \) and \[ … \] as LaTeX,
    # so "chart.png \(PNG image\)" would show as italic maths.
    return re.sub(r"([\\`*_{}#+\-.!|~$])", r"\\\1", text).translate(_BRACKETS)


def files_received(files: Sequence[Attachment]) -> str:
    """What the demo says about the files it received: one line each (name, type, size, pixels or pages), inert."""
    if not files:
        return ""
    from chat.attachments import describe

    count = "one file" if len(files) == 1 else f"{len(files)} files"
    lines = "".join(f"- {escape_inline(describe(att))}\n" for att in files)
    return (
        f"You attached {count}, and this is what reached me:\n\n{lines}\n"
        "I cannot look inside files; a model that reads images and PDFs would answer about their content.\n\n"
    )


def demo_reply(prompt: str, files: Sequence[Attachment] = ()) -> str:
    """The deterministic markdown reply to a prompt (and the files that came with it)."""
    asked = prompt.strip()
    clipped = asked[:_ECHO_LIMIT] + ("…" if len(asked) > _ECHO_LIMIT else "")
    quote = escape_inline(clipped) if clipped else "*(an empty message)*"
    return (
        "Hello! I am **Parley's offline demo model**: no AI provider is connected, so this reply is canned.\n\n"
        "You asked:\n\n"
        f"> {quote}\n\n"
        f"{files_received(files)}"
        "To talk to a real model:\n"
        "1. set `OPENAI_API_KEY`, `ANTHROPIC_API_KEY` or `GEMINI_API_KEY` in `.env` and restart;\n"
        "2. or add an OpenAI-compatible endpoint (Ollama, vLLM, OpenRouter...) in `models.toml`.\n\n"
        "Meanwhile, here is some rendering to look at. A code block:\n\n"
        "```python\n"
        "def greet(name: str) -> str:\n"
        '    return f"Hello, {name}!"\n'
        "```\n\n"
        "and a formula: $e^{i\\pi} + 1 = 0$, or displayed:\n\n"
        "$$\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}$$\n"
    )


REASONING_TEXT = (
    "The user wrote to the offline demo. There is no model to think with, "
    "so I will explain how to connect one and show some markdown."
)


def _last_user(messages: Sequence[Message]) -> Message | None:
    for m in reversed(messages):
        if m.role == "user":
            return m
    return None


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


class DemoProvider(Provider):
    """Streams a canned markdown reply at a realistic pace; honours cancellation and max_tokens."""

    name = "demo"
    label = "Demo (offline)"
    key_env_var = None
    accepts = _PARAMS
    supports_tools = False

    def __init__(self, rate: float = 60.0):
        """`rate` is tokens per second; 0 streams as fast as possible (tests)."""
        self.rate = rate

    def curated(self) -> list[ModelInfo]:
        return [
            # It takes every file (it only describes them), so the feature works with no key.
            ModelInfo(provider=self.name, id=DEMO_MODEL, label="Parley demo (offline)", context_window=32_768,
                      params=self.accepts, demo=True, vision=True, pdf=True),
            ModelInfo(provider=self.name, id=REASONING_MODEL, label="Parley demo with reasoning (offline)",
                      context_window=32_768, params=self.accepts, demo=True, vision=True, pdf=True),
        ]

    def model_info(self, model: str) -> ModelInfo:
        info = super().model_info(model)
        return info if info.demo else info.model_copy(update={"demo": True, "vision": True, "pdf": True})

    async def list_models(self) -> list[ModelInfo]:
        return self.curated()

    async def stream(
        self,
        model: str,
        messages: Sequence[Message],
        params: Params,
        *,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncGenerator[StreamEvent, None]:
        last = _last_user(messages)
        prompt, files = (last.content, last.attachments) if last is not None else ("", ())
        delay = 1.0 / self.rate if self.rate > 0 else 0.0
        input_tokens = sum(len(_tokens(m.content)) for m in messages)
        reasoning_tokens = 0
        thoughts = _tokens(REASONING_TEXT) if model == REASONING_MODEL else []
        if thoughts:
            # Like real reasoning models, thinking counts against max_tokens.
            for piece in thoughts[: params.max_tokens]:
                await asyncio.sleep(delay)  # a cancellation point even at rate 0
                reasoning_tokens += 1
                yield ReasoningDelta(piece)
        pieces = _tokens(demo_reply(prompt, files))
        limit = max(0, params.max_tokens - reasoning_tokens)
        sent = pieces[:limit]
        for piece in sent:
            await asyncio.sleep(delay)
            yield TextDelta(piece)
        yield Usage(
            input_tokens=input_tokens,
            output_tokens=len(sent) + reasoning_tokens,
            reasoning_tokens=reasoning_tokens or None,
        )
        cut = len(sent) < len(pieces) or reasoning_tokens < len(thoughts)
        yield Finish(FinishReason.LENGTH if cut else FinishReason.STOP, detail="max_tokens" if cut else "stop",
                     model_version=f"demo/{model}")
