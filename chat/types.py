"""Provider-agnostic types: messages, parameters, model info and stream events."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

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


class Message(BaseModel):
    """One chat message in the provider-neutral shape."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str = ""
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
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None


@dataclass(slots=True, frozen=True)
class Finish:
    reason: FinishReason
    detail: str | None = None  # provider's own reason, e.g. "RECITATION", "end_turn"
    model_version: str | None = None


StreamEvent = Union[TextDelta, ReasoningDelta, ToolCallDelta, ToolCallEvent, Usage, Finish]


@dataclass(slots=True)
class ToolSpec:
    """A tool offered to the model: name, description and JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
