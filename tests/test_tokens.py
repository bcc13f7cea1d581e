"""Token counts (chat.tokens): OpenAI's own encodings offline, a CJK-aware estimate elsewhere, the calibration."""

from __future__ import annotations

import subprocess
import sys

import bpe_openai
import pytest

from chat import tokens
from chat.context import estimate_tokens as four_chars_a_token
from chat.context import trim_messages
from chat.tokens import TokenCounter, clamp_scale, count_tokens, encoding_name, estimate_tokens
from chat.types import Message
from core.summaries import Calibration
from tests.apphelpers import ROOT

CHINESE = ("人工智能是计算机科学的一个分支，它企图了解智能的实质，并生产出一种新的能以人类智能相似的方式做出反应的智能机器。"
           "该领域的研究包括机器人、语言识别、图像识别、自然语言处理和专家系统等。自从人工智能诞生以来，理论和技术日益成熟，应用领域也不断扩大。")
JAPANESE = ("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは"
            "記憶している。吾輩はここで始めて人間というものを見た。しかもあとで聞くとそれは書生という人間中で一番獰悪な種族であったそうだ。")
SAMPLES = ["hello world", "tiktoken is great!", CHINESE, JAPANESE, "def f(x):\n    return x ** 2  # ünïcödé ✓ 🦜",
           "<|endoftext|> is plain text here", ""]


@pytest.mark.parametrize("model, name", [
    ("gpt-4o", "o200k_base"), ("gpt-4o-mini-2024-07-18", "o200k_base"), ("gpt-4.1-nano", "o200k_base"),
    ("gpt-5", "o200k_base"), ("o3", "o200k_base"), ("o4-mini", "o200k_base"), ("openai/gpt-4o", "o200k_base"),
    ("ft:gpt-4o-mini:acme::abc123", "o200k_base"), ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"),
    ("gpt-3.5-turbo", "cl100k_base"), ("claude-sonnet-4-5", None), ("gemini-2.5-flash", None), ("llama3.2", None),
    ("gpt-test", None), ("o3x-custom", None), ("qwen2.5:7b", None),
])
def test_model_names_map_to_their_encoding(model, name):
    assert encoding_name(model) == name


@pytest.mark.parametrize("model", ["gpt-4o", "o3", "gpt-5-mini", "gpt-4", "gpt-3.5-turbo"])
def test_openai_counts_equal_the_encodings_own(model):
    encoding = bpe_openai.get_encoding(encoding_name(model))
    for text in SAMPLES:
        assert count_tokens(text, "openai", model) == len(encoding.encode_ordinary(text))
    # Independent of the package: the cl100k count OpenAI's cookbook gives for this sentence.
    assert count_tokens("tiktoken is great!", "openai", "gpt-4") == 6


def test_an_openai_compatible_endpoint_serving_an_openai_model_is_counted_exactly():
    assert count_tokens(CHINESE, "openrouter", "openai/gpt-4o") == count_tokens(CHINESE, "openai", "gpt-4o")


@pytest.mark.parametrize("text", [CHINESE, JAPANESE], ids=["chinese", "japanese"])
def test_the_cjk_estimate_is_within_30_percent_of_the_real_count(text):
    real = len(bpe_openai.get_encoding("o200k_base").encode_ordinary(text))
    assert abs(estimate_tokens(text) - real) <= 0.3 * real, (estimate_tokens(text), real)
    # What the 4-characters rule said: a fourfold undercount of what the model reads.
    assert four_chars_a_token(text) < 0.5 * real


def test_the_estimate_of_english_is_about_four_characters_a_token():
    assert estimate_tokens("a" * 400) == 100 and estimate_tokens("") == 0 and estimate_tokens("é") == 1


def test_a_cjk_conversation_is_trimmed_by_what_it_really_costs():
    # 40 messages of 120 Chinese characters: 1,200 tokens by the 4-characters rule, about 4,000 really.
    messages = [Message(role="user" if i % 2 == 0 else "assistant", content=CHINESE[:120]) for i in range(40)]
    _, dropped_before = trim_messages(messages, 4096, 1024)
    kept, dropped = trim_messages(messages, 4096, 1024, count=TokenCounter("anthropic", "claude-x"))
    assert dropped_before == 0, "the old rule would send all of them (and overflow the window)"
    assert dropped > 10 and sum(estimate_tokens(m.content) for m in kept) <= 4096 - 1024


def test_counting_needs_no_network():
    # A fresh process with every socket connection refused: the encodings come from the installed wheel.
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network blocked by the test')\n"
        "socket.socket.connect = refuse; socket.socket.connect_ex = refuse; socket.create_connection = refuse\n"
        "from chat.tokens import count_tokens\n"
        "print(count_tokens('tiktoken is great!', 'openai', 'gpt-4'), count_tokens('hello world', 'openai', 'gpt-5'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "", "HOME": "/nonexistent", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["6", "2"]


def test_a_counter_never_waits_for_an_encoding_to_load(monkeypatch):
    loads: list[str] = []
    monkeypatch.setattr(tokens, "_loaded", {})
    monkeypatch.setattr(tokens, "_loading", set())
    monkeypatch.setattr(tokens.threading, "Thread", lambda target, args, **kw: type(
        "T", (), {"start": lambda self: loads.append(args[0])})())
    counter = TokenCounter("openai", "gpt-4o", scale=1.5)
    assert not counter.exact and counter(CHINESE) == round(estimate_tokens(CHINESE) * 1.5)
    assert loads == ["o200k_base"], "the load started in a thread; this turn used the estimate"
    TokenCounter("openai", "gpt-4o")
    assert loads == ["o200k_base"], "started once"


def test_an_exact_counter_is_not_scaled():
    tokens.warm(("o200k_base",))
    counter = TokenCounter("openai", "gpt-4o", scale=2.0)
    assert counter.exact and counter.scale == 1.0 and counter(CHINESE) == count_tokens(CHINESE, "openai", "gpt-4o")


def test_calibration_is_the_clamped_ratio_per_conversation_and_model():
    assert clamp_scale(150, 100) == 1.5 and clamp_scale(1000, 100) == 2.0 and clamp_scale(10, 100) == 0.5
    assert clamp_scale(None, 100) is None and clamp_scale(0, 100) is None and clamp_scale(10, 0) is None
    calibration = Calibration(size=2)
    calibration.learn("c1", "anthropic:claude-x", 130, 100)
    calibration.learn("c2", "anthropic:claude-x", 80, 100)
    assert calibration.scale("c1", "anthropic:claude-x") == 1.3 and calibration.scale("c2", "anthropic:claude-x") == 0.8
    assert calibration.scale("c1", "gemini:gemini-x") == 1.0 and calibration.scale(None, "anthropic:claude-x") == 1.0
    calibration.scale("c1", "anthropic:claude-x")  # c1 used again: c2 is now the least recently used
    calibration.learn("c3", "anthropic:claude-x", 100, 100)  # over its size: the least recently used goes
    assert calibration.scale("c2", "anthropic:claude-x") == 1.0 and calibration.scale("c1", "anthropic:claude-x") == 1.3


@pytest.mark.parametrize("text", [CHINESE, JAPANESE], ids=["chinese", "japanese"])
def test_a_stopped_cjk_replys_estimated_output_and_a_cjk_text_file_are_not_a_quarter_of_the_real_count(text):
    """The live "~N tokens" of a reply the provider never counted (Stop) and a text file's budget use the same
    CJK-aware estimate as the context budget (they used four characters a token: a quarter of the real count)."""
    from chat.attachments import attachment_tokens
    from chat.turn import TurnResult
    from chat.types import Attachment

    real = len(bpe_openai.get_encoding("o200k_base").encode_ordinary(text))
    reply = TurnResult(provider="openai", model="gpt-4o")
    reply.add_text(text)
    assert reply.usage.estimated and abs(reply.usage.output_tokens - real) / real <= 0.3
    data = text.encode()
    file = Attachment(name="notes.txt", mime="text/plain", data=data, size=len(data), text=text)
    assert abs(attachment_tokens(file, "anthropic") - real) / real <= 0.3
