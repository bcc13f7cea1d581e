"""Scenario knobs for the fake provider servers, and the built-in scenarios picked by model name."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "provider-streams"

_WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore "
    "et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip"
).split()


@dataclass
class Scenario:
    """How the fake answers one model; every knob is optional (see tests/fakes/README.md)."""

    text: str | None = None
    tokens: int = 20
    rate: float = 0.0
    chunk_tokens: int = 1
    reasoning: str | None = None
    fail_status: int | None = None
    fail_times: int = 1
    retry_after: float | None = None
    fail_type: str | None = None
    drop_after: int | None = None
    stall_after: int | None = None
    stall_seconds: float = 30.0
    error_after: int | None = None
    truncate_after: int | None = None
    # A string is sent verbatim; a dict maps provider ("openai"|"anthropic"|"gemini") to its own value.
    finish: str | dict[str, str] | None = None
    prompt_blocked: bool = False
    tool_calls: list[dict[str, Any]] | None = None
    echo: bool = False
    replay: str | None = None
    # OpenAI Responses: refuse `reasoning.summary` (400) as the API does for an organization it has not verified.
    unverified_org: bool = False
    replay_fix_final_blank_line: bool = True
    # The reply once the request carries tool results: `then` after one round of tool calls, `then.then`
    # after two, and so on (the last scenario of the chain repeats). Lets a test drive a tool loop.
    then: Scenario | None = None
    # Anthropic prompt caching (tests/fakes/prompt_cache.py): a prefix shorter than this is not cached.
    cache_min_tokens: int = 1024
    # Seconds before the answer; read by the moderation endpoint (a scenario named after the moderation model).
    delay: float = 0.0

    def replace(self, **changes: Any) -> Scenario:
        """Return a copy with some knobs changed."""
        return dataclasses.replace(self, **changes)

    def finish_for(self, provider: str) -> str | None:
        """The forced finish reason in this provider's vocabulary, or None."""
        if isinstance(self.finish, dict):
            return self.finish.get(provider)
        return self.finish

    def replay_path(self) -> Path:
        """Resolve `replay`: as given, else relative to tests/fixtures/provider-streams/."""
        assert self.replay is not None
        p = Path(self.replay)
        if not p.is_absolute() and not p.exists():
            p = FIXTURES_DIR / self.replay
        return p

    def after_tool_rounds(self, rounds: int) -> Scenario:
        """The scenario for a request that already holds `rounds` rounds of tool calls (follows `then`)."""
        sc = self
        for _ in range(rounds):
            if sc.then is None:
                break
            sc = sc.then
        return sc

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        """Build from JSON (used by the control endpoint); unknown keys raise TypeError."""
        then = data.get("then")
        if isinstance(then, dict):
            data = {**data, "then": cls.from_dict(then)}
        return cls(**data)


def default_tokens(n: int) -> list[str]:
    """Deterministic lorem-like reply: token i is a word suffixed with i, then a space ("lorem0 ipsum1 ...")."""
    return [f"{_WORDS[i % len(_WORDS)]}{i} " for i in range(n)]


_TOKEN_RE = re.compile(r"\s*\S+\s*|\s+")


def split_tokens(text: str) -> list[str]:
    """Split text into word tokens that concatenate back to the text exactly."""
    if not text:
        return []
    # Each word carries its trailing whitespace; leading whitespace stays with the first word.
    return _TOKEN_RE.findall(text)


# Any model name starting with one of these gets the default scenario ("gpt-test-mini" too).
DEFAULT_PREFIXES: tuple[str, ...] = ("gpt-test", "claude-test", "gemini-test", "fast")
# Names that get the default scenario.
DEFAULT_MODELS: tuple[str, ...] = (
    *DEFAULT_PREFIXES,
    # Real-looking names so an app configured with its production defaults works against the fakes.
    "gpt-4o-mini",
    "gpt-4.1-mini",
    "claude-haiku-4-5",
    "claude-sonnet-4-5",
    "gemini-2.5-flash",
    "gemini-2.0-flash",
)

_TOOL = [{"name": "get_weather", "arguments": {"city": "Edinburgh", "country": "UK", "units": "c"}}]

NAMED: dict[str, Scenario] = {
    "slow": Scenario(rate=20, tokens=40),
    "long": Scenario(tokens=2000),
    "drop-after-5": Scenario(drop_after=5),
    "stall-after-3": Scenario(stall_after=3),
    "error-after-5": Scenario(error_after=5),
    "truncate-after-5": Scenario(truncate_after=5),
    "fail-429-once": Scenario(fail_status=429, retry_after=0.01),
    "fail-500-once": Scenario(fail_status=500),
    "fail-429-always": Scenario(fail_status=429, fail_times=10**9, retry_after=0.01),
    "fail-500-always": Scenario(fail_status=500, fail_times=10**9),
    "overloaded-once": Scenario(fail_status=529, fail_type="overloaded_error"),
    "echo": Scenario(echo=True),
    "reasoning": Scenario(reasoning="Let me think about this step by step. The answer follows.", tokens=10),
    "length": Scenario(tokens=10, finish={"openai": "length", "anthropic": "max_tokens", "gemini": "MAX_TOKENS"}),
    "safety": Scenario(tokens=5, finish={"openai": "content_filter", "anthropic": "refusal", "gemini": "SAFETY"}),
    "recitation": Scenario(tokens=5, finish={"openai": "content_filter", "anthropic": "refusal", "gemini": "RECITATION"}),
    "prompt-blocked": Scenario(prompt_blocked=True),
    "tools": Scenario(tool_calls=_TOOL),
}

_PATTERNS: list[tuple[re.Pattern[str], Any]] = [
    # rate-<N>-tokens-<M>[-chunk-<K>]
    (
        re.compile(r"rate-(\d+(?:\.\d+)?)-tokens-(\d+)(?:-chunk-(\d+))?"),
        lambda m: Scenario(rate=float(m[1]), tokens=int(m[2]), chunk_tokens=int(m[3] or 1)),
    ),
    (re.compile(r"tokens-(\d+)"), lambda m: Scenario(tokens=int(m[1]))),
    (re.compile(r"(drop|stall|error|truncate)-after-(\d+)"), lambda m: Scenario(**{f"{m[1]}_after": int(m[2])})),
    (
        re.compile(r"fail-(\d{3})-(once|twice|always|times-(\d+))"),
        lambda m: Scenario(
            fail_status=int(m[1]),
            fail_times={"once": 1, "twice": 2, "always": 10**9}.get(m[2]) or int(m[3]),
            retry_after=0.01 if int(m[1]) == 429 else None,
        ),
    ),
]


def builtin_scenario(model: str) -> Scenario | None:
    """The scenario a model name selects without any code, or None if the name is unknown."""
    if model in NAMED:
        return NAMED[model]
    for pattern, build in _PATTERNS:
        m = pattern.fullmatch(model)
        if m:
            return build(m)
    if model in DEFAULT_MODELS or model.startswith(DEFAULT_PREFIXES):
        return Scenario()
    return None


def builtin_model_names() -> list[str]:
    """Names listed by GET .../models besides the scenarios set at run time."""
    examples = ["rate-50-tokens-200", "rate-2000-tokens-4000", "rate-0-tokens-20000"]
    return list(DEFAULT_MODELS) + list(NAMED) + examples
