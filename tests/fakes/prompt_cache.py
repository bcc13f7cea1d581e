"""Anthropic prompt caching in the fake: cache_control breakpoints read and written as the real API reports them.

What the real API does (platform.claude.com prompt-caching guide, /work/shared/research/wave2.md §5): the
cached prefix runs in the order tools → system → messages; a block with `cache_control` is a breakpoint
and caches everything up to and including it; at most 4 breakpoints (more is a 400); a prefix shorter than
the model's minimum (1,024 to 4,096 tokens) is silently not cached; at each breakpoint the API looks for
an earlier cached prefix at that block or up to 20 blocks before it. Usage: `cache_read_input_tokens` is
the prefix read from the cache, `cache_creation_input_tokens` what was written after it up to the last
breakpoint, and `input_tokens` only the rest (after the last breakpoint), so the prompt is the sum.

The fake keeps one cache per API key and model, with no expiry (the real one lasts 5 minutes from its last
use); `FakeServer.clear()` empties it. Token counts are the fake's own (`_count_prompt`: words plus 3 a
message); tool definitions count 0, as in the rest of the fake, so caching never changes the total.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .wire import AnthropicWire

MAX_BREAKPOINTS = 4
LOOKBACK = 20


@dataclass(frozen=True)
class CacheUse:
    """What one request read from and wrote to the cache (tokens)."""

    read: int = 0
    write: int = 0


class TooManyBreakpoints(ValueError):
    """More than MAX_BREAKPOINTS blocks carry cache_control: the API answers 400."""


def _canon(obj: Any) -> str:
    """A block as the cache sees it: the cache_control marker itself is not part of the prefix."""
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != "cache_control"}
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def _words(block: dict[str, Any]) -> int:
    text = block.get("text")
    return len(text.split()) if isinstance(text, str) else 0


def prefix_points(body: dict[str, Any]) -> list[tuple[str, int, bool]]:
    """Every block of the prompt in cache order: (hash of the prefix through it, its tokens, has cache_control).

    Tokens follow the fake's count: a message (or the system prompt) is its words plus 3; the 3 are
    counted at its first block, so a prefix through a message's last block holds the whole message.
    """
    h = hashlib.sha256(_canon(body.get("model")).encode())
    points: list[tuple[str, int, bool]] = []
    tokens = 0
    for tool in body.get("tools") or []:
        h.update(b"T" + _canon(tool).encode())
        points.append((h.hexdigest(), tokens, isinstance(tool, dict) and "cache_control" in tool))
    sections: list[tuple[str, list[dict[str, Any]]]] = []
    if body.get("system"):
        sections.append(("system", _blocks(body["system"])))
    sections += [(str(m.get("role")), _blocks(m.get("content"))) for m in body.get("messages") or [] if isinstance(m, dict)]
    for role, blocks in sections:
        for i, block in enumerate(blocks):
            tokens += _words(block) + (3 if i == 0 else 0)
            h.update(role.encode() + b"\0" + _canon(block).encode())
            points.append((h.hexdigest(), tokens, "cache_control" in block))
    return points


class PromptCache:
    """The cached prefixes of one fake server: hash → tokens, per API key and model."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], int] = {}

    def clear(self) -> None:
        self._entries.clear()

    def use(self, key: str, body: dict[str, Any], min_tokens: int) -> CacheUse:
        """Read and write the cache for one request, as the real API would; TooManyBreakpoints for a 400."""
        points = prefix_points(body)
        marks = [i for i, (_, _, marked) in enumerate(points) if marked]
        if len(marks) > MAX_BREAKPOINTS:
            raise TooManyBreakpoints(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
                                     f"Found {len(marks)}.")
        if not marks:
            return CacheUse()
        read = 0
        for mark in marks:
            for i in range(mark, max(mark - LOOKBACK, -1), -1):
                found = self._entries.get((key, points[i][0]))
                if found is not None:
                    read = max(read, found)
                    break
        written = [points[m] for m in marks if points[m][1] >= min_tokens]
        for digest, tokens, _ in written:
            self._entries[(key, digest)] = tokens
        top = max((tokens for _, tokens, _ in written), default=0)
        return CacheUse(read=read, write=max(top - read, 0))


class CachingAnthropicWire(AnthropicWire):
    """AnthropicWire whose usage splits the prompt into cache reads, cache writes and the uncached rest."""

    def __init__(self, model: str, prompt_tokens: int, cache: CacheUse) -> None:
        super().__init__(model, prompt_tokens)
        self.cache = cache

    def _split(self, usage: dict[str, Any]) -> dict[str, Any]:
        if "input_tokens" not in usage:
            return usage
        read, write = self.cache.read, self.cache.write
        rest = max(int(usage["input_tokens"]) - read - write, 0)
        return {**usage, "input_tokens": rest, "cache_creation_input_tokens": write, "cache_read_input_tokens": read}

    def _event(self, obj: dict[str, Any]) -> bytes:  # type: ignore[override]  # the base's is a staticmethod
        if isinstance(obj.get("usage"), dict):
            obj = {**obj, "usage": self._split(obj["usage"])}
        message = obj.get("message")
        if isinstance(message, dict) and isinstance(message.get("usage"), dict):
            obj = {**obj, "message": {**message, "usage": self._split(message["usage"])}}
        return AnthropicWire._event(obj)

    def unary(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        obj = super().unary(*args, **kwargs)
        return {**obj, "usage": self._split(obj["usage"])}
