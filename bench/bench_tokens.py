"""Counting a 200-message conversation's context budget once per turn: the old 4-characters rule against
chat.tokens (OpenAI's o200k encoding from bpe-openai; the CJK-aware estimate for other models).

    python bench/bench_tokens.py [--runs 50]

A benchmark, not a test: nothing asserts these numbers (bench/README.md records them).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from chat import tokens
from chat.context import estimate_tokens, trim_messages
from chat.tokens import TokenCounter, warm
from chat.types import Message

WORDS = ("the model answers questions about apples, pears and the history of fruit in Europe; "
         "人工智能是计算机科学的一个分支 吾輩は猫である ").split()


def conversation(n: int = 200, words: int = 120) -> list[Message]:
    """`n` messages of about `words` words each, alternating user and assistant, a little CJK in each."""
    out = []
    for i in range(n):
        text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(words)) + f" #{i}"
        out.append(Message(role="user" if i % 2 == 0 else "assistant", content=text))
    return out


def time_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    messages = conversation()
    chars = sum(len(m.content) for m in messages)
    start = time.perf_counter()
    warm(("o200k_base",))
    print(f"o200k encoding loaded once per process in {(time.perf_counter() - start) * 1000:.0f} ms")
    print(f"200 messages, {chars:,} characters; a budget that keeps them all (window 1,000,000)")
    cases: list[tuple[str, Callable[[], object]]] = [
        ("4-characters rule (before)", lambda: trim_messages(messages, 1_000_000, 2048, "openai", estimate_tokens)),
        ("chat.tokens estimate (claude)", lambda: trim_messages(messages, 1_000_000, 2048, "anthropic",
                                                                 TokenCounter("anthropic", "claude-x"))),
        ("o200k, texts not counted before (a conversation's first turn in this process)",
         lambda: (tokens._counted.clear(), trim_messages(messages, 1_000_000, 2048, "openai", TokenCounter("openai", "gpt-4o")))),
        ("o200k, the next turn (older texts counted before)", lambda: trim_messages(messages, 1_000_000, 2048, "openai",
                                                                                    TokenCounter("openai", "gpt-4o"))),
    ]
    for name, fn in cases:
        median, p95 = time_ms(fn, args.runs)
        print(f"| {name} | {median:.2f} | {p95:.2f} |")


if __name__ == "__main__":
    main()
