"""OpenAI's model families, known by name: which models reason (an effort, no temperature or top_p), which read
files, the curated list of api.openai.com, and what a compatible endpoint's model takes. No SDK here."""

from __future__ import annotations

import re

from chat.types import ModelInfo

_SAMPLING = frozenset({"temperature", "top_p", "max_tokens", "seed"})
# GPT-5-family reasoning models refuse temperature/top_p; they take an effort instead.
_REASONING = frozenset({"max_tokens", "effort"})


# Listing on api.openai.com returns every model the key can see; these are not chat models.
_NOT_CHAT = ("embedding", "tts", "whisper", "dall-e", "moderation", "davinci", "babbage", "transcribe", "image",
             "realtime", "audio", "search", "sora", "codex-mini", "computer-use")


# OpenAI's chat models that read images (images guide); PDFs go to the same models (file inputs guide).
# o1-mini, o1-preview and o3-mini read text only.
_READS_FILES = re.compile(r"(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-4-turbo|gpt-5|o1(?!-mini|-preview)|o3(?!-mini)|o4)\b")


# OpenAI's reasoning models (o-series, GPT-5 except its chat variant) refuse temperature and top_p and want
# max_completion_tokens; o1-mini and o1-preview take no reasoning effort either. Known by family name, so that a
# proxy in front of OpenAI (OPENAI_BASE_URL) gets the same controls as api.openai.com.
_REASONING_FAMILY = re.compile(r"(o1|o3|o4)(-|$)|gpt-5(?!(\.\d+)?-chat)")
_NO_EFFORT = re.compile(r"o1-(mini|preview)")


def reasoning_params(model: str) -> frozenset[str] | None:
    """The parameters an OpenAI reasoning model takes, from its family name; None for any other model.

    A router's vendor prefix (OpenRouter's `openai/o3-mini`) is read past, so such an endpoint's OpenAI
    reasoning models get the effort control too.
    """
    model = model.removeprefix("openai/")
    if _REASONING_FAMILY.match(model) is None:
        return None
    return frozenset({"max_tokens"}) if _NO_EFFORT.match(model) else _REASONING


#: The ways to call an endpoint: Chat Completions, the Responses API, or "auto" (the Responses API for OpenAI's
#: reasoning models on api.openai.com, Chat Completions for everything else).
API_STYLES = ("auto", "chat", "responses")


def compatible_params(model: str, *, effort: bool, api: str = "chat") -> frozenset[str]:
    """What a compatible endpoint's model takes: an OpenAI reasoning model by its name (effort, no sampling),
    else sampling, with `effort` when the endpoint says it takes one (models.toml); the Responses API has no seed."""
    params = reasoning_params(model) or frozenset(_SAMPLING | ({"effort"} if effort else set()))
    return params - {"seed"} if api == "responses" else params


def reads_files(model: str) -> bool:
    """Whether an official OpenAI model takes images and PDFs, from its family name."""
    return _READS_FILES.match(model) is not None


def _official_models() -> list[ModelInfo]:
    def m(id_: str, label: str, ctx: int | None, params: frozenset[str]) -> ModelInfo:
        reads = reads_files(id_)
        return ModelInfo(provider="openai", id=id_, label=label, context_window=ctx, params=params, supports_tools=True,
                         vision=reads, pdf=reads)

    return [
        m("gpt-5.4", "GPT-5.4", 1_050_000, _REASONING),
        m("gpt-5.4-mini", "GPT-5.4 mini", 400_000, _REASONING),
        m("gpt-5-mini", "GPT-5 mini", 400_000, _REASONING),
        m("gpt-4.1", "GPT-4.1", 1_047_576, _SAMPLING),
        m("gpt-4.1-mini", "GPT-4.1 mini", 1_047_576, _SAMPLING),
        m("gpt-4o-mini", "GPT-4o mini", 128_000, _SAMPLING),
    ]
