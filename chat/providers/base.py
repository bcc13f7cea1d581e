"""What every provider is: data plus one async generator."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Sequence
from typing import ClassVar

from chat.types import Message, ModelInfo, Params, StreamEvent, ToolSpec

# A model name travels in a JSON body for most providers: any printable name without spaces,
# quotes or URL syntax (Ollama's "qwen2.5:7b", OpenRouter's "org/model:free", "ft:gpt-4o:org::id").
BODY_MODEL_NAME = re.compile(r"[A-Za-z0-9._:/@+~-]+")
# Gemini puts the name in the URL path (models/{name}:streamGenerateContent): one plain segment,
# optionally after the prefixes the SDK passes through unchanged.
PATH_MODEL_NAME = re.compile(r"(?:models/|tunedModels/)?[A-Za-z0-9][A-Za-z0-9._-]*")


class Provider:
    """Base class for providers. Subclasses set the class attributes and implement `stream`.

    A provider never retries (the turn runner owns retries: SDK clients are built with
    max_retries=0), never touches Gradio or the database, and raises only `chat.errors` types.
    It builds its SDK client once, lazily, and reuses it.
    """

    # name, label, key_env_var and accepts are class defaults that an instance may override (not ClassVars):
    # an OpenAI-compatible endpoint is the OpenAI provider with its own name, label, key variable and parameters.
    #: Registry key, the part before ':' in "provider:model".
    name: str = ""
    #: Human label used in the model picker ("OpenAI", "Anthropic", ...).
    label: str = ""
    #: Environment variable holding the key (None when no key is needed).
    key_env_var: str | None = None
    #: Whether this instance runs on a key the user pasted (bring your own key), not on the server's:
    #: a refused key's advice then names that key, not the environment variable.
    key_pasted: bool = False
    #: Parameter names (fields of Params) the provider sends.
    accepts: frozenset[str] = frozenset()
    #: Whether the provider can use tools.
    supports_tools: ClassVar[bool] = False
    #: Model names this provider can carry safely; the registry refuses others before any call.
    model_name_pattern: ClassVar[re.Pattern[str]] = BODY_MODEL_NAME
    #: How a valid name is written, for the refusal message.
    model_name_hint: ClassVar[str] = "letters, digits and . _ : / @ + ~ -"

    def stream(
        self,
        model: str,
        messages: Sequence[Message],
        params: Params,
        *,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncGenerator[StreamEvent, None]:
        """Stream one reply as events; the last event is a Finish unless the stream was cut.

        An async generator (callers close it with `aclosing`), so every provider writes `async def ... yield`.
        """
        raise NotImplementedError

    async def list_models(self) -> list[ModelInfo]:
        """Models the endpoint offers (may raise ChatError; the registry falls back to `curated`)."""
        return self.curated()

    def curated(self) -> list[ModelInfo]:
        """A short built-in list used when live listing fails."""
        return []

    def model_info(self, model: str) -> ModelInfo:
        """Info for any model name, known or typed by the user."""
        for info in self.curated():
            if info.id == model:
                return info
        return ModelInfo(provider=self.name, id=model, label=model, params=self.accepts, supports_tools=self.supports_tools)

    def warm(self) -> None:
        """Import the SDK and build the client now (from a worker thread at start-up), so that
        the first request never imports seconds of SDK code on the event loop."""

    def with_api_key(self, api_key: str) -> Provider:
        """This provider using another key (bring your own key); providers without keys return self."""
        return self

    def retire(self) -> None:
        """This provider is no longer handed out (an evicted own-key provider): close its client once nothing
        uses it. Providers without a client of their own have nothing to do."""

    async def aclose(self) -> None:
        """Close the SDK client, if one was built."""
