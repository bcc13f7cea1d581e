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
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

#: A calibration ratio is clamped to this range: one odd turn (a tool schema, an image) must not swing the budget.
MIN_SCALE, MAX_SCALE = 0.5, 2.0

# Measured on prose samples (research wave2.md §7 and tests/test_tokens.py): o200k spends 0.7 (zh) to 0.86 (ja)
# tokens a CJK character, cl100k 1.1 to 1.16. 0.85 a character is within 30% of o200k's count; the calibration
# from the provider's reported figure closes the rest after a conversation's first turn.
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
_loaded: dict[str, Any] = {}
_loading: set[str] = set()


def encoding(name: str) -> Any:
    """The bpe-openai encoding, loaded once per process (0.2 to a few seconds: blocking; from the wheel's own
    files, never the network). The event loop uses `loaded_encoding` instead."""
    found = _loaded.get(name)
    if found is None:
        with _lock:
            found = _loaded.get(name)
            if found is None:
                import bpe_openai  # on first use: a process that never counts an OpenAI model never loads it

                found = _loaded[name] = bpe_openai.get_encoding(name)
    return found


def loaded_encoding(name: str) -> Any | None:
    """The encoding if it is loaded; else None, and it starts loading in a thread (a turn never waits for it)."""
    found = _loaded.get(name)
    if found is None and name not in _loading:
        _loading.add(name)
        threading.Thread(target=encoding, args=(name,), name="parley-tokens", daemon=True).start()
    return found


def warm(names: tuple[str, ...] = ("o200k_base", "cl100k_base")) -> None:
    """Load the encodings now (blocking: call it from a thread at start-up)."""
    for name in names:
        encoding(name)


# Counts of texts already counted, by (encoding, hash, length): a conversation's older messages are counted again
# every turn, so the next turn counts only what is new. Ints only: no message text is kept alive here.
_counted: OrderedDict[tuple[str, int, int], int] = OrderedDict()
_COUNTED_MAX = 50_000


def _exact(enc: Any, name: str, text: str) -> int:
    key = (name, hash(text), len(text))
    found = _counted.get(key)
    if found is None:
        found = _counted[key] = len(enc.encode_ordinary(text))
        if len(_counted) > _COUNTED_MAX:
            _counted.popitem(last=False)
    return found


def estimate_tokens(text: str) -> int:
    """Tokens of `text` without a tokenizer: about 0.85 a CJK character, four characters a token for the rest.

    Characters of three UTF-8 bytes (Han, kana, Hangul, CJK punctuation) count as CJK, those of two (accented
    Latin, Cyrillic, Greek) as half of one: measured in C by the UTF-8 length, which is a hundred times faster
    than matching a character class, and errs on the side of more tokens for other scripts.
    """
    if not text:
        return 0
    if text.isascii():
        return (len(text) + 3) // 4
    wide = (len(text.encode("utf-8", "surrogatepass")) - len(text)) / 2
    return max(1, round(wide * CJK_TOKENS_PER_CHAR + (len(text) - wide) / 4))


def count_tokens(text: str, provider: str, model: str) -> int:
    """Tokens of `text` for this model: the real encoding for models named like OpenAI's, else the estimate.

    `provider` is kept for the providers that may gain an offline tokenizer; the encoding follows the model name,
    so an OpenAI-compatible endpoint serving `gpt-4o` is counted as OpenAI counts it. Loads the encoding on
    first use (blocking).
    """
    del provider
    name = encoding_name(model)
    if name is None:
        return estimate_tokens(text)
    return _exact(encoding(name), name, text) if text else 0


def clamp_scale(reported: int | None, counted: int) -> float | None:
    """The calibration ratio reported / counted, clamped; None when there is nothing to learn from."""
    if not reported or counted <= 0:
        return None
    return min(MAX_SCALE, max(MIN_SCALE, reported / counted))


class TokenCounter:
    """`count(text)` for one model, on the event loop: never waits for an encoding to load.

    `exact` is True when the model's own encoding counts (once it is loaded: until then the estimate does);
    otherwise `scale` (the conversation's calibration) multiplies the estimate.
    """

    __slots__ = ("_encoding", "_name", "exact", "model", "provider", "scale")

    def __init__(self, provider: str, model: str, scale: float = 1.0):
        self.provider, self.model = provider, model
        self._name = encoding_name(model)
        self._encoding = loaded_encoding(self._name) if self._name else None
        self.exact = self._encoding is not None
        self.scale = 1.0 if self.exact else scale

    def __call__(self, text: str) -> int:
        if not text:
            return 0
        if self._encoding is not None and self._name is not None:
            return _exact(self._encoding, self._name, text)
        found = estimate_tokens(text)
        return max(1, round(found * self.scale)) if self.scale != 1.0 else found


Counter = Callable[[str], int]
