"""Google Gemini (Developer API) through the official `google-genai` SDK."""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import AsyncGenerator, Sequence
from contextvars import ContextVar, Token
from typing import Any

from chat.errors import ChatError
from chat.providers import _attachments as files
from chat.providers._common import (
    Failure,
    LoopClient,
    StreamState,
    Who,
    classify,
    error_boundary,
    import_sdk,
    is_transport_error,
    parse_args,
    retry_after,
    sdk_missing,
    system_text,
    transport_failure,
    weak_builder,
)
from chat.providers.base import PATH_MODEL_NAME, Provider
from chat.providers.gemini_stream import ChunkReader, SignedCall
from chat.types import (
    Message,
    ModelInfo,
    Params,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/"

_THINKING_BUDGET = {"low": 1024, "medium": 8192, "high": 24576}  # Gemini 2.x takes a budget, 3.x a level

_ALL = frozenset({"temperature", "top_p", "max_tokens", "seed", "effort"})

# The HTTP responses opened by the stream running in this context. google-genai streams through a chain of
# async generators; closing the outer one early (consumer stops between events) leaves the HTTP response
# open until garbage collection, so the stream closes its responses itself (collected by an httpx2 hook).
_OPENED: ContextVar[list[Any] | None] = ContextVar("parley_gemini_responses", default=None)


async def _track_response(response: Any) -> None:
    opened = _OPENED.get()
    if opened is not None:
        opened.append(response)


def reads_files(model: str) -> bool:
    """Whether a model reads images and PDFs: every Gemini model does (image and document guides); Gemma and
    the embedding models listed beside them are not taken to."""
    name = model.removeprefix("models/")
    return name.startswith("gemini-") and "embedding" not in name


def _curated() -> list[ModelInfo]:
    def m(id_: str, label: str) -> ModelInfo:
        return ModelInfo(provider="gemini", id=id_, label=label, context_window=1_048_576, params=_ALL, supports_tools=True,
                         vision=True, pdf=True)

    return [
        m("gemini-3.5-flash", "Gemini 3.5 Flash"),
        m("gemini-2.5-pro", "Gemini 2.5 Pro"),
        m("gemini-2.5-flash", "Gemini 2.5 Flash"),
        m("gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite"),
    ]






class GeminiProvider(Provider):
    """Streams Gemini replies with `client.aio.models.generate_content_stream`."""

    name = "gemini"
    label = "Google Gemini"
    key_env_var = "GEMINI_API_KEY"
    accepts = _ALL
    supports_tools = True
    model_name_pattern = PATH_MODEL_NAME
    model_name_hint = "letters, digits and . _ - (optionally after models/ or tunedModels/)"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        key_env_var: str = "GEMINI_API_KEY",
        api_version: str | None = None,
        list_timeout: float = 3.0,
    ):
        """`key_env_var` names the variable the key came from (GEMINI_API_KEY or GOOGLE_API_KEY) for error messages."""
        self.key_env_var = key_env_var
        self.base_url = base_url or DEFAULT_BASE_URL
        self.api_version = api_version
        self._api_key = api_key
        self._list_timeout = list_timeout
        self._client = LoopClient(self._build_client, closer=_close_client)

    @staticmethod
    def sdk_missing() -> str | None:
        """Why this provider cannot run here (the SDK is not installed), else None."""
        return sdk_missing("google.genai", "google-genai", "Google Gemini")

    def curated(self) -> list[ModelInfo]:
        return _curated()

    def model_info(self, model: str) -> ModelInfo:
        info = super().model_info(model)
        reads = info.vision or reads_files(model)
        return info if info.vision == reads else info.model_copy(update={"vision": reads, "pdf": reads})

    def _build_client(self) -> Any:
        genai = import_sdk("google.genai", "google-genai", self.label)
        import httpx2
        from google.genai import types

        options = types.HttpOptions(
            base_url=self.base_url,  # explicit, so the SDK does not read GOOGLE_GEMINI_BASE_URL behind our back
            api_version=self.api_version,
            timeout=None,  # milliseconds when set; the turn runner owns timeouts
            # An explicit httpx2 transport: google-genai switches to aiohttp by itself when it is installed
            # (Parley installs it for the OpenAI and Anthropic SDKs), and its aiohttp path has no response
            # hooks, which this adapter closes an abandoned stream's response with.
            async_client_args={"event_hooks": {"response": [_track_response]}, "transport": httpx2.AsyncHTTPTransport()},
        )
        return genai.Client(api_key=self._api_key, vertexai=False, http_options=options)

    def warm(self) -> None:
        self._client.get()

    def with_api_key(self, api_key: str) -> Provider:
        """The same provider with a user's own key and a client of its own."""
        clone = copy.copy(self)
        clone._api_key = api_key
        clone.key_pasted = True
        clone._client = LoopClient(weak_builder(clone._build_client), closer=_close_client)
        return clone

    def retire(self) -> None:
        self._client.close_when_gone(self)

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- errors -------------------------------------------------------------------------------

    def _who(self, model: str) -> Who:
        custom = self.base_url != DEFAULT_BASE_URL
        return Who(self.label, self.key_env_var, model, self.base_url if custom else None, "GOOGLE_GEMINI_BASE_URL",
                   pasted_key=self.key_pasted)

    def _map_error(self, e: Exception, state: StreamState, model: str) -> ChatError | None:
        from google.genai import errors

        who = self._who(model)
        if isinstance(e, errors.APIError):
            response = getattr(e, "response", None)
            headers = getattr(response, "headers", None)
            return classify(
                Failure(
                    status=e.code if isinstance(e.code, int) else None,
                    kind=_reason(e.details) or e.status,
                    message=e.message or str(e),
                    retry_after=retry_after(headers) or _retry_delay(e.details),
                ),
                who,
                started=state.started,
            )
        if is_transport_error(e):  # google-genai lets raw httpx2 errors through
            return transport_failure(e, who, started=state.started)
        return None

    # -- the request --------------------------------------------------------------------------

    def config(self, model: str, messages: Sequence[Message], params: Params, tools: Sequence[ToolSpec] = ()) -> Any:
        """The GenerateContentConfig for one request (public so tests can inspect it)."""
        from google.genai import types

        sent = params.for_provider(self.model_info(model).params & self.accepts)
        config: dict[str, Any] = {}
        system = system_text(list(messages))
        if system:
            config["system_instruction"] = system
        for key in ("temperature", "top_p", "seed"):
            if key in sent:
                config[key] = sent[key]
        if "max_tokens" in sent:
            config["max_output_tokens"] = sent["max_tokens"]
        if "effort" in sent:
            effort = sent["effort"]
            if model.startswith("gemini-2"):
                config["thinking_config"] = types.ThinkingConfig(
                    include_thoughts=True, thinking_budget=_THINKING_BUDGET[effort]
                )
            else:
                config["thinking_config"] = types.ThinkingConfig(include_thoughts=True, thinking_level=effort.upper())
        if tools:
            config["tools"] = [
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name=t.name, description=t.description, parameters_json_schema=t.parameters
                        )
                        for t in tools
                    ]
                )
            ]
            config["automatic_function_calling"] = types.AutomaticFunctionCallingConfig(disable=True)
        return types.GenerateContentConfig(**config)

    async def stream(
        self,
        model: str,
        messages: Sequence[Message],
        params: Params,
        *,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncGenerator[StreamEvent, None]:
        config = self.config(model, messages, params, tools)
        if files.has_attachments(messages):  # scaling of files: off the event loop
            contents = await asyncio.to_thread(to_gemini_contents, messages, self.model_info(model), self.label)
        else:
            contents = to_gemini_contents(messages)
        state = StreamState()
        reader = ChunkReader(self.label)
        opened: list[Any] = []
        token: Token[list[Any] | None] | None = _OPENED.set(opened)
        chunks = None
        try:
            with error_boundary(state, lambda e, s: self._map_error(e, s, model)):
                chunks = await self._client.get().aio.models.generate_content_stream(
                    model=model, contents=contents, config=config
                )
                async for chunk in chunks:
                    if token is not None:  # reset before the first yield, in the context that set it
                        _OPENED.reset(token)
                        token = None
                    for out in reader.feed(chunk):
                        if not state.started and isinstance(out, (TextDelta, ReasoningDelta, ToolCallDelta)):
                            state.started = True
                        yield out
        finally:
            if token is not None:
                _OPENED.reset(token)
            if chunks is not None:
                await chunks.aclose()
            for response in opened:
                await response.aclose()
        for out in reader.end():
            yield out

    async def list_models(self) -> list[ModelInfo]:
        state = StreamState()
        known = {m.id: m for m in self.curated()}
        out: list[ModelInfo] = []
        with error_boundary(state, lambda e, s: self._map_error(e, s, "(listing)")):
            pager = await self._client.get().aio.models.list(
                config={"page_size": 100, "http_options": {"timeout": int(self._list_timeout * 1000)}}
            )
            async for m in pager:
                actions = m.supported_actions or []
                if "generateContent" not in actions:
                    continue
                model_id = (m.name or "").removeprefix("models/")
                if not model_id:
                    continue
                out.append(
                    known.get(model_id)
                    or ModelInfo(
                        provider=self.name,
                        id=model_id,
                        label=m.display_name or model_id,
                        context_window=m.input_token_limit,
                        params=self.accepts,
                        supports_tools=True,
                        vision=reads_files(model_id),
                        pdf=reads_files(model_id),
                    )
                )
                if len(out) >= 300:
                    break
        return out


async def _close_client(client: Any) -> None:
    await client.aio.aclose()
    client.close()  # the sync side, which google-genai builds too


def _reason(details: Any) -> str | None:
    """The ErrorInfo reason (e.g. API_KEY_INVALID) inside a Google error body."""
    err = details.get("error", details) if isinstance(details, dict) else None
    for item in (err or {}).get("details", []) if isinstance(err, dict) else []:
        if isinstance(item, dict) and isinstance(reason := item.get("reason"), str):
            return reason
    return None


def _retry_delay(details: Any) -> float | None:
    """Seconds from a google.rpc.RetryInfo detail ("retryDelay": "30s")."""
    err = details.get("error", details) if isinstance(details, dict) else None
    for item in (err or {}).get("details", []) if isinstance(err, dict) else []:
        delay = item.get("retryDelay") if isinstance(item, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return float(delay[:-1])
            except ValueError:
                return None
    return None






def to_gemini_contents(messages: Sequence[Message], info: ModelInfo | None = None, label: str = "Google Gemini") -> list[Any]:
    """Our messages as Gemini contents: assistant -> "model", tool results -> user function_response parts.

    A user message's files come before its text: images and PDFs as `inline_data` parts
    (`Part.from_bytes`; the SDK writes them as URL-safe base64), text files as text parts. Without
    `info`, the model is taken to read images and PDFs.
    """
    from google.genai import types

    prepared = files.prepared_items(messages, info, files.GEMINI, label, "gemini")
    names: dict[str, str] = {}  # tool call id -> function name, for the responses
    turns: list[tuple[str, list[Any]]] = []
    for i, m in enumerate(messages):
        if m.role == "system":
            continue
        parts: list[Any] = []
        if i in prepared:
            role = "user"
            for item in prepared[i]:
                if isinstance(item, files.Inline):
                    parts.append(types.Part.from_bytes(data=item.att.data, mime_type=item.att.mime))
                else:
                    parts.append(types.Part(text=item.text))
            if m.content:
                parts.append(types.Part(text=m.content))
        elif m.role == "tool":
            role = "user"
            name = m.name or names.get(m.tool_call_id or "", "") or "tool"
            # Gemini reads an "error" key as the function's error, anything else as its output.
            response = {"error": m.content} if m.is_error else {"result": m.content}
            parts.append(types.Part(function_response=types.FunctionResponse(name=name, response=response)))
        else:
            role = "model" if m.role == "assistant" else "user"
            if m.content:
                parts.append(types.Part(text=m.content))
            for c in m.tool_calls if m.role == "assistant" else ():
                names[c.id] = c.name
                signature = c.signature if isinstance(c, SignedCall) else None
                parts.append(types.Part(
                    function_call=types.FunctionCall(name=c.name, args=parse_args(c.arguments)),
                    thought_signature=base64.b64decode(signature) if signature else None,
                ))
        if not parts:
            continue
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(parts)
        else:
            turns.append((role, parts))
    return [types.Content(role=role, parts=parts) for role, parts in turns]
