"""Provider-agnostic types: messages, parameters, model info and stream events."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chat.tokens import estimate_tokens as _estimate_text

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(BaseModel):
    """A complete tool call requested by the model (arguments as a JSON text)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: str = "{}"

    def parsed_arguments(self) -> Any:
        """The arguments decoded from JSON (raises ValueError when they are not JSON)."""
        return json.loads(self.arguments or "{}")


AttachmentKind = Literal["image", "pdf", "text"]
#: The image types every vision provider takes; Parley re-encodes an image in the type it came in.
IMAGE_MIMES: frozenset[str] = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
PDF_MIME = "application/pdf"
TEXT_MIME = "text/plain"


class Attachment(BaseModel):
    """A file in a message, already checked and cleaned (chat.attachments.ingest makes them).

    `mime` is the type read from the bytes, never the name's or the browser's word: one of
    IMAGE_MIMES, PDF_MIME, or TEXT_MIME for every text-like file (its text is in `text`).
    `data` holds the cleaned bytes: an image re-encoded without metadata, a PDF as uploaded, a
    text file as UTF-8. Providers send it in their own format (chat.providers.*).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    mime: str
    data: bytes = Field(default=b"", repr=False)
    sha256: str = ""
    size: int = 0
    width: int | None = None
    height: int | None = None
    pages: int | None = None
    #: A text file's text; a PDF's extracted text (for endpoints that take no files), None if it has none.
    text: str | None = Field(default=None, repr=False)
    #: The stored attachment's id, once saved (storage.attachments).
    id: str | None = None

    @property
    def kind(self) -> AttachmentKind:
        if self.mime in IMAGE_MIMES:
            return "image"
        if self.mime == PDF_MIME:
            return "pdf"
        return "text"


class Message(BaseModel):
    """One chat message in the provider-neutral shape."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str = ""
    #: Files of a user message, in the order given (empty for every other role).
    attachments: tuple[Attachment, ...] = ()
    reasoning: str | None = None
    # Assistant messages that asked for tools, and tool results answering them.
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False  # a tool result that is an error (Anthropic and Gemini mark it as one)


class Params(BaseModel):
    """Generation parameters; the bounds here are the single source for UI sliders and API checks."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0.0, le=2.0, description="Sampling temperature")
    top_p: float | None = Field(default=None, ge=0.0, le=1.0, description="Nucleus sampling")
    max_tokens: int = Field(default=2048, ge=1, le=65536, description="Longest reply, in tokens")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="Seed for repeatable sampling")
    effort: Literal["low", "medium", "high"] | None = Field(default=None, description="Reasoning effort")

    def for_provider(self, accepted: frozenset[str]) -> dict[str, Any]:
        """The set values a provider accepts (None values and unsupported ones dropped)."""
        return {k: v for k, v in self.model_dump().items() if v is not None and k in accepted}


# Parameter names the UI knows how to draw, in display order.
PARAM_NAMES: tuple[str, ...] = ("temperature", "top_p", "max_tokens", "seed", "effort")


def param_bounds(name: str) -> tuple[float | None, float | None]:
    """The (ge, le) bounds of a numeric parameter, read from the Params model."""
    ge = le = None
    for meta in Params.model_fields[name].metadata:
        ge = getattr(meta, "ge", ge)
        le = getattr(meta, "le", le)
    return ge, le


class ModelInfo(BaseModel):
    """What a model is and what it accepts."""

    model_config = ConfigDict(frozen=True)

    provider: str
    id: str
    label: str = ""
    context_window: int | None = None
    params: frozenset[str] = frozenset()
    supports_tools: bool = False
    #: Reads images (PNG, JPEG, WebP, GIF) / PDFs natively. Text files go to every model as text.
    vision: bool = False
    pdf: bool = False
    demo: bool = False

    @property
    def ref(self) -> str:
        """The `provider:model` reference."""
        return f"{self.provider}:{self.id}"

    @property
    def display(self) -> str:
        return self.label or self.id


class FinishReason(str, enum.Enum):
    """Why a reply ended."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"  # safety / recitation / blocked prompt
    REFUSAL = "refusal"
    ERROR = "error"
    CANCELLED = "cancelled"
    TRUNCATED = "truncated"  # the stream ended without its finish marker
    INTERRUPTED = "interrupted"  # the server stopped mid-reply (set by the store on restart)


# Stream events: plain slotted dataclasses, because the hot path creates one per token.


@dataclass(slots=True, frozen=True)
class TextDelta:
    text: str


@dataclass(slots=True, frozen=True)
class ReasoningDelta:
    text: str


@dataclass(slots=True, frozen=True)
class ToolCallDelta:
    """A fragment of a tool call's arguments as it streams (index identifies the call)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True, frozen=True)
class ToolCallEvent:
    """A tool call whose arguments are complete."""

    call: ToolCall


@dataclass(slots=True, frozen=True)
class Usage:
    """Token usage of one reply: one contract, mapped from every provider's own figures.

    - `input_tokens`: the whole prompt, cached parts included (OpenAI `prompt_tokens`, Gemini
      `promptTokenCount`; Anthropic's `input_tokens` counts only the uncached rest, so its cache
      reads and writes are added back).
    - `output_tokens`: everything generated, reasoning included, as every vendor bills it (Gemini's
      `candidatesTokenCount` leaves thoughts out, so `thoughtsTokenCount` is added).
    - `reasoning_tokens`: the part of `output_tokens` spent thinking (None when not reported).
    - `cached_input_tokens`: the part of `input_tokens` read from the provider's prompt cache.
    - `cache_write_tokens`: the part of `input_tokens` written to the cache (Anthropic bills these higher).
    - `estimated`: True when the figures are Parley's estimate (no usage reported, or a stopped reply),
      False when the provider reported them.
    None means "not reported", never zero.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    estimated: bool = False

    @property
    def uncached_input_tokens(self) -> int | None:
        """Prompt tokens neither read from nor written to the cache (priced at the plain input price)."""
        if self.input_tokens is None:
            return None
        return max(self.input_tokens - (self.cached_input_tokens or 0) - (self.cache_write_tokens or 0), 0)

    def as_dict(self) -> dict[str, Any]:
        """The contract as plain JSON-ready values (exports, the API)."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "estimated": self.estimated,
        }

    @staticmethod
    def combine(parts: Iterable[Usage]) -> Usage:
        """The usage of several calls together (a tool loop's steps): sums of what is known, estimated if any part is."""
        items = list(parts)

        def total(name: str) -> int | None:
            known = [getattr(u, name) for u in items if getattr(u, name) is not None]
            return sum(known) if known else None

        return Usage(
            input_tokens=total("input_tokens"),
            output_tokens=total("output_tokens"),
            reasoning_tokens=total("reasoning_tokens"),
            cached_input_tokens=total("cached_input_tokens"),
            cache_write_tokens=total("cache_write_tokens"),
            estimated=any(u.estimated for u in items),
        )


#: Fewer output tokens than this give no rate: a handful of tokens in one burst says nothing about speed.
MIN_RATE_TOKENS = 10


def tokens_per_second(output_tokens: int | None, ttft_ms: float | None, duration_ms: float | None) -> float | None:
    """Parley's one definition of speed: output tokens (reasoning included) over generation time.

    Generation time is the reply's duration minus its time to first token (the first text,
    reasoning or tool-call piece), so queueing and prompt processing do not count. None when a
    figure is missing, the generation time is not positive, or there are fewer than
    MIN_RATE_TOKENS output tokens. The chat's live figure, compare panes, batch results, exports
    and the dashboard (storage.repository.usage_stats, token-weighted over replies) all use it.
    """
    if output_tokens is None or ttft_ms is None or duration_ms is None or output_tokens < MIN_RATE_TOKENS:
        return None
    generating_ms = duration_ms - ttft_ms
    if generating_ms <= 0:
        return None
    return output_tokens * 1000 / generating_ms


def estimate_tokens(text: str, pieces: int = 0) -> int:
    """A rough token count of streamed text: at least one per streamed piece, else chat.tokens' estimate (which
    counts a CJK character as most of a token, not a quarter)."""
    return max(pieces, _estimate_text(text))


@dataclass(slots=True, frozen=True)
class Finish:
    reason: FinishReason
    detail: str | None = None  # provider's own reason, e.g. "RECITATION", "end_turn"
    model_version: str | None = None
    # The provider's id for this request (its `x-request-id` / `request-id` header or response id), for
    # support tickets and the reproducibility card; None where the provider gives none.
    request_id: str | None = None


StreamEvent = TextDelta | ReasoningDelta | ToolCallDelta | ToolCallEvent | Usage | Finish


@dataclass(slots=True)
class ToolSpec:
    """A tool offered to the model: name, description and JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
