"""Token counts for the context budget: OpenAI's own encodings where a model uses them, an estimate elsewhere.

OpenAI models (and OpenAI-compatible servers serving models named like OpenAI's, e.g. `openai/gpt-4o` on
OpenRouter) are counted with the real o200k / cl100k encodings from `bpe-openai`, which ships both in its
wheel: `tiktoken` downloads its files at first use, which fails offline and on locked-down servers. Other
models get an estimate that does not undercount Chinese, Japanese and Korean text fourfold as a
4-characters-a-token rule does, and a per-conversation calibration from what the provider reported
(`calibration`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from functools import cache
from typing import Any

#: A calibration ratio is clamped to this range: one odd turn (a tool schema, an image) must not swing the budget.
MIN_SCALE, MAX_SCALE = 0.5, 2.0

# Han, kana, Hangul (syllables and jamo), CJK punctuation and full-width forms. Measured on prose samples
# (research wave2.md §7 and tests/test_tokens.py): o200k spends 0.7 (zh) to 0.86 (ja) tokens a character,
# cl100k 1.1 to 1.16. 0.85 a character sits within 30% of o200k and of cl100k's counts; the calibration
# from the provider's reported figure closes the rest after the first turn.
_CJK = re.compile(
    "[\u1100-\u11ff\u3000-\u303f\u3040-\u309f\u30a0-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff]"
)
CJK_TOKENS_PER_CHAR = 0.85

# Model names → OpenAI encodings (bpe-openai's encoding_for_model knows neither gpt-5 nor o3, so the map is ours).
_O200K = re.compile(r"(gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|chatgpt-4o|o1|o3|o4|codex)([-.:_].*)?$")
_CL100K = re.compile(r"(gpt-4|gpt-3\.5|gpt-35|text-embedding-3|text-embedding-ada-002)([-.:_].*)?$")


def encoding_name(model: str) -> str | None:
    """The OpenAI encoding a model name uses ("o200k_base", "cl100k_base"), or None for other models.

    Accepts a router's vendor prefix (`openai/gpt-4o`) and fine-tuned names (`ft:gpt-4o-mini:org::id`).
    """
    name = model.strip().lower()
    name = name.removeprefix("ft:").rpartition("/")[2]
    if _O200K.match(name):
        return "o200k_base"
    if _CL100K.match(name):
        return "cl100k_base"
    return None


_lock = threading.Lock()


@cache
def _encoding(name: str) -> Any:
    """The bpe-openai encoding (loaded once, ~0.2 s; from the wheel's own files, never the network)."""
    with _lock:
        import bpe_openai  # imported on first use: a process that never counts an OpenAI model never loads it

        return bpe_openai.get_encoding(name)


def estimate_tokens(text: str) -> int:
    """Tokens of `text` without a tokenizer: 0.85 a CJK character, about four characters a token for the rest."""
    if not text:
        return 0
    cjk = len(_CJK.findall(text)) if not text.isascii() else 0
    rest = len(text) - cjk
    return max(1, round(cjk * CJK_TOKENS_PER_CHAR) + (rest + 3) // 4)


def count_tokens(text: str, provider: str, model: str) -> int:
    """Tokens of `text` for this model: the real encoding for models named like OpenAI's, else the estimate.

    `provider` is kept for the providers that may gain an offline tokenizer; the encoding follows the model name,
    so an OpenAI-compatible endpoint serving `gpt-4o` is counted as OpenAI counts it.
    """
    del provider
    name = encoding_name(model)
    if name is None:
        return estimate_tokens(text)
    return len(_encoding(name).encode_ordinary(text)) if text else 0


def clamp_scale(reported: int | None, counted: int) -> float | None:
    """The calibration ratio reported / counted, clamped; None when there is nothing to learn from."""
    if not reported or counted <= 0:
        return None
    return min(MAX_SCALE, max(MIN_SCALE, reported / counted))


class TokenCounter:
    """`count(text)` for one model, memoised for the turn (the budget is counted more than once per turn).

    `exact` is True when the model's own encoding counts; otherwise `scale` (the conversation's calibration)
    multiplies the estimate.
    """

    __slots__ = ("_memo", "exact", "model", "provider", "scale")

    def __init__(self, provider: str, model: str, scale: float = 1.0):
        self.provider, self.model = provider, model
        self.exact = encoding_name(model) is not None
        self.scale = 1.0 if self.exact else scale
        self._memo: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        found = self._memo.get(text)
        if found is None:
            found = count_tokens(text, self.provider, self.model)
            if self.scale != 1.0 and found:
                found = max(1, round(found * self.scale))
            if len(self._memo) < 4096:
                self._memo[text] = found
        return found


Counter = Callable[[str], int]
