"""The offline demo provider."""

from __future__ import annotations

import asyncio
import time

import pytest

from chat.providers.demo import DEMO_MODEL, REASONING_MODEL, DemoProvider, demo_reply, escape_inline
from chat.types import Finish, FinishReason, Message, Params, ReasoningDelta, TextDelta, Usage


async def run(provider: DemoProvider, prompt: str, model: str = DEMO_MODEL, params: Params | None = None) -> list:
    return [e async for e in provider.stream(model, [Message(role="user", content=prompt)], params or Params())]


def text(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_reply_is_deterministic_and_ends_with_usage_and_stop():
    first = await run(DemoProvider(rate=0), "What is Parley?")
    second = await run(DemoProvider(rate=0), "What is Parley?")
    assert first == second
    assert text(first) == demo_reply("What is Parley?")
    usage, finish = first[-2], first[-1]
    assert isinstance(usage, Usage) and usage.output_tokens == len([e for e in first if isinstance(e, TextDelta)])
    assert usage.input_tokens == 3
    assert finish == Finish(FinishReason.STOP, detail="stop", model_version=f"demo/{DEMO_MODEL}")


async def test_reply_says_what_it_is_and_how_to_add_a_provider():
    reply = text(await run(DemoProvider(rate=0), "hello"))
    assert "offline demo" in reply
    for hint in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", ".env", "models.toml"):
        assert hint in reply
    assert "```python" in reply and "$e^{i\\pi} + 1 = 0$" in reply  # code and LaTeX to show rendering


async def test_prompt_is_echoed_quoted_and_inert():
    prompt = "<img src=x onerror=alert(1)> **bold** [link](http://x) `code`\n# heading\n> quote $x$"
    reply = text(await run(DemoProvider(rate=0), prompt))
    quoted = next(line for line in reply.splitlines() if line.startswith("> "))
    assert quoted == "> " + escape_inline(prompt)
    # No raw markup survives: tags are entities, markdown punctuation is backslash-escaped, one line only.
    assert "<img" not in reply and "&lt;img src=x onerror=alert&#40;1&#41;&gt;" in quoted
    assert "**bold**" not in quoted and "\\*\\*bold\\*\\*" in quoted
    assert "[link](http://x)" not in quoted and "&#91;link&#93;&#40;http://x&#41;" in quoted and "\\`code\\`" in quoted
    assert "\\# heading" in quoted and "\\$x\\$" in quoted


async def test_long_prompts_are_clipped_to_200_characters():
    reply = text(await run(DemoProvider(rate=0), "a" * 500))
    quoted = next(line for line in reply.splitlines() if line.startswith("> "))
    assert quoted == "> " + "a" * 200 + "…"


async def test_small_max_tokens_truncates_with_length():
    events = await run(DemoProvider(rate=0), "hi", params=Params(max_tokens=5))
    assert len([e for e in events if isinstance(e, TextDelta)]) == 5
    assert events[-2].output_tokens == 5
    assert events[-1].reason is FinishReason.LENGTH


async def test_reasoning_model_thinks_first():
    events = await run(DemoProvider(rate=0), "hi", model=REASONING_MODEL)
    first_text = next(i for i, e in enumerate(events) if isinstance(e, TextDelta))
    assert first_text > 0 and all(isinstance(e, ReasoningDelta) for e in events[:first_text])
    assert events[-2].reasoning_tokens == first_text
    assert events[-1].reason is FinishReason.STOP


async def test_reasoning_counts_against_max_tokens():
    events = await run(DemoProvider(rate=0), "hi", model=REASONING_MODEL, params=Params(max_tokens=4))
    assert len([e for e in events if isinstance(e, ReasoningDelta)]) == 4
    assert not any(isinstance(e, TextDelta) for e in events)
    assert events[-1].reason is FinishReason.LENGTH


async def test_streams_at_the_configured_pace():
    provider = DemoProvider(rate=200)
    started = time.perf_counter()
    events = await run(provider, "hi", params=Params(max_tokens=40))
    elapsed = time.perf_counter() - started
    assert len([e for e in events if isinstance(e, TextDelta)]) == 40
    assert elapsed >= 40 / 200 * 0.9


async def test_cancellation_stops_the_stream():
    seen: list = []

    async def consume():
        async for event in DemoProvider(rate=50).stream(DEMO_MODEL, [Message(role="user", content="hi")], Params()):
            seen.append(event)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    count = len(seen)
    await asyncio.sleep(0.1)
    assert 0 < count == len(seen) < 20
    assert not any(isinstance(e, Finish) for e in seen)


def test_models_are_marked_demo():
    provider = DemoProvider()
    assert [m.ref for m in provider.curated()] == ["demo:parley-demo", "demo:reasoning-demo"]
    assert provider.curated()[0].label == "Parley demo (offline)"
    assert all(m.demo for m in provider.curated())
    assert provider.model_info("anything").demo


async def test_brackets_in_the_echo_do_not_become_latex_delimiters():
    # The chat renders \( … \) and \[ … \] as maths: a backslash-escaped bracket in the echo (or in a
    # file line such as "chart.png (PNG image, 320×200 px)") would show as italic formula text.
    reply = text(await run(DemoProvider(rate=0), "f(x) and [1, 2]"))
    quoted = next(line for line in reply.splitlines() if line.startswith("> "))
    assert "\\(" not in quoted and "\\[" not in quoted and "\\)" not in quoted and "\\]" not in quoted
    assert quoted == "> f&#40;x&#41; and &#91;1, 2&#93;"
