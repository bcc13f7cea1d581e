"""Anthropic Messages API through the official `anthropic` SDK (raw `messages.create(stream=True)` events)."""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import AsyncGenerator, Sequence
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
    error_message,
    import_sdk,
    is_transport_error,
    parse_args,
    retry_after,
    sdk_missing,
    system_text,
    transport_failure,
    weak_builder,
)
from chat.providers._http import sdk_http_client
from chat.providers.anthropic_stream import EventReader, ThinkingCall
from chat.providers.base import Provider
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

DEFAULT_BASE_URL = "https://api.anthropic.com"

#: The prompt-cache marker (5-minute cache: the default, and the cheaper write).
EPHEMERAL = {"type": "ephemeral"}
#: The API refuses a request with more breakpoints than this.
MAX_BREAKPOINTS = 4
# Blocks the API does not let carry cache_control.
_UNCACHEABLE = frozenset({"thinking", "redacted_thinking"})


# anthropic 2.x has no temperature/top_p/seed: only max_tokens (required) and an effort.
_WITH_EFFORT = frozenset({"max_tokens", "effort"})
_NO_EFFORT = frozenset({"max_tokens"})


# Every Claude 3 and later model reads images (vision guide). PDFs: Claude 3.5 and later (PDF support guide);
# the Claude 3 models (Opus, Sonnet, Haiku) read images only.
_VISION = re.compile(r"claude-(3|[a-z]+-[4-9]|[4-9])")
_PDF = re.compile(r"claude-(3-[5-9]|[a-z]+-[4-9]|[4-9])")


def reads(model: str) -> tuple[bool, bool]:
    """(images, PDFs): what a Claude model reads, from its family name."""
    return _VISION.match(model) is not None, _PDF.match(model) is not None


def _curated() -> list[ModelInfo]:
    def m(id_: str, label: str, ctx: int, params: frozenset[str]) -> ModelInfo:
        vision, pdf = reads(id_)
        return ModelInfo(provider="anthropic", id=id_, label=label, context_window=ctx, params=params, supports_tools=True,
                         vision=vision, pdf=pdf)

    return [
        m("claude-opus-4-7", "Claude Opus 4.7", 1_000_000, _WITH_EFFORT),
        m("claude-sonnet-4-6", "Claude Sonnet 4.6", 1_000_000, _WITH_EFFORT),
        m("claude-haiku-4-5", "Claude Haiku 4.5", 200_000, _NO_EFFORT),
    ]


class AnthropicProvider(Provider):
    """Streams Claude replies; system prompt top-level, max_tokens always sent, effort via output_config."""

    name = "anthropic"
    label = "Anthropic"
    key_env_var = "ANTHROPIC_API_KEY"
    accepts = _WITH_EFFORT
    supports_tools = True

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float | None = 600.0,
        list_timeout: float = 3.0,
        thinking_with_effort: bool = True,
        prompt_cache: bool = True,
    ):
        """`thinking_with_effort`: when an effort is set, also ask for adaptive thinking so reasoning can be shown.
        `prompt_cache`: mark cache breakpoints (see `mark_cache`); ANTHROPIC_PROMPT_CACHE=off turns it off."""
        self.prompt_cache = prompt_cache
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._api_key = api_key
        self._timeouts = (connect_timeout, read_timeout)
        self._list_timeout = list_timeout
        self.thinking_with_effort = thinking_with_effort
        self._client = LoopClient(self._build_client)

    @staticmethod
    def sdk_missing() -> str | None:
        """Why this provider cannot run here (the SDK is not installed), else None."""
        return sdk_missing("anthropic", "anthropic", "Anthropic")

    def curated(self) -> list[ModelInfo]:
        return _curated()

    def model_info(self, model: str) -> ModelInfo:
        info = super().model_info(model)
        if info.vision or info.pdf:
            return info
        vision, pdf = reads(model)
        return info.model_copy(update={"vision": vision, "pdf": pdf})

    def _build_client(self) -> Any:
        anthropic = import_sdk("anthropic", "anthropic", self.label)
        import httpx2

        connect, read = self._timeouts
        timeout = httpx2.Timeout(connect=connect, read=read, write=30.0, pool=30.0)
        return anthropic.AsyncAnthropic(
            api_key=self._api_key,
            base_url=self.base_url,  # explicit, so the SDK does not read ANTHROPIC_BASE_URL behind our back
            max_retries=0,
            timeout=timeout,
            **sdk_http_client(anthropic, timeout),
        )

    def warm(self) -> None:
        self._client.get()

    def with_api_key(self, api_key: str) -> Provider:
        """The same provider with a user's own key and a client of its own."""
        clone = copy.copy(self)
        clone._api_key = api_key
        clone.key_pasted = True
        clone._client = LoopClient(weak_builder(clone._build_client))
        return clone

    def retire(self) -> None:
        self._client.close_when_gone(self)

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- errors -------------------------------------------------------------------------------

    def _who(self, model: str) -> Who:
        custom = self.base_url != DEFAULT_BASE_URL
        return Who(self.label, self.key_env_var, model, self.base_url if custom else None, "ANTHROPIC_BASE_URL",
                   pasted_key=self.key_pasted)

    def _map_error(self, e: Exception, state: StreamState, model: str) -> ChatError | None:
        import anthropic

        who = self._who(model)
        if isinstance(e, anthropic.APIStatusError):
            # An `event: error` inside the stream arrives as APIStatusError with the stream's 200 status.
            status = None if e.status_code == 200 else e.status_code
            return classify(
                Failure(
                    status=status,
                    kind=getattr(e, "type", None) or _body_kind(e.body),
                    message=getattr(e, "api_message", None) or error_message(e.body, e.message),
                    retry_after=retry_after(e.response.headers),
                ),
                who,
                started=state.started,
            )
        if isinstance(e, anthropic.APIConnectionError):
            return transport_failure(e, who, started=state.started)
        if isinstance(e, anthropic.APIError):
            return classify(
                Failure(status=None, kind=_body_kind(e.body), message=error_message(e.body, e.message)),
                who,
                started=state.started,
            )
        if is_transport_error(e):  # anthropic lets httpx2.RemoteProtocolError through on an abrupt close
            return transport_failure(e, who, started=state.started)
        return None

    # -- the request --------------------------------------------------------------------------

    def request(
        self, model: str, messages: Sequence[Message], params: Params, tools: Sequence[ToolSpec] = ()
    ) -> dict[str, Any]:
        """The keyword arguments for `messages.create` (public so tests can inspect it)."""
        body = self._body(model, messages, params, tools)
        return files.materialize(body) if files.has_attachments(messages) else body

    def _body(
        self, model: str, messages: Sequence[Message], params: Params, tools: Sequence[ToolSpec] = ()
    ) -> dict[str, Any]:
        """The request body, its files still as `_attachments.Blob`s (written late, in pieces)."""
        info = self.model_info(model)
        sent = params.for_provider(info.params & self.accepts)
        kwargs: dict[str, Any] = {
            "model": model,
            "max_tokens": params.max_tokens,  # required by the API
            "messages": _anthropic_messages(messages, info, self.label),
            "stream": True,
        }
        system = system_text(list(messages))
        if system:
            kwargs["system"] = system
        if "effort" in sent:
            kwargs["output_config"] = {"effort": sent["effort"]}
            if self.thinking_with_effort:
                kwargs["thinking"] = {"type": "adaptive", "display": "summarized"}
        if tools:
            kwargs["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools]
        if self.prompt_cache:
            mark_cache(kwargs)
        return kwargs

    async def stream(
        self,
        model: str,
        messages: Sequence[Message],
        params: Params,
        *,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncGenerator[StreamEvent, None]:
        content: list[bytes] | None = None
        if files.has_attachments(messages):
            # Scaling, base64 and the JSON of megabytes of files: in a worker thread, not on the event loop
            # that streams everyone else's replies.
            content = await asyncio.to_thread(self._request_bytes, model, messages, params, tools)
        else:
            kwargs = self.request(model, messages, params, tools)
        state = StreamState()
        reader = EventReader()
        with error_boundary(state, lambda e, s: self._map_error(e, s, model)):
            client = self._client.get()
            if content is None:
                response = await client.messages.create(**kwargs)
            else:
                response = await _post_json(client, content)
            async with response:
                async for event in response:
                    for out in reader.feed(event):
                        if not state.started and isinstance(out, (TextDelta, ReasoningDelta, ToolCallDelta)):
                            state.started = True
                        yield out

    def _request_bytes(
        self, model: str, messages: Sequence[Message], params: Params, tools: Sequence[ToolSpec]
    ) -> list[bytes]:
        """The request body as compact JSON in pieces, as the SDK writes it."""
        return files.dumps(self._body(model, messages, params, tools))

    async def list_models(self) -> list[ModelInfo]:
        state = StreamState()
        known = {m.id: m for m in self.curated()}
        out: list[ModelInfo] = []
        with error_boundary(state, lambda e, s: self._map_error(e, s, "(listing)")):
            page = await self._client.get().models.list(limit=100, timeout=self._list_timeout)
            for m in page.data:
                if m.id in known:
                    out.append(known[m.id])
                    continue
                vision, pdf = reads(m.id)
                out.append(
                    ModelInfo(
                        provider=self.name,
                        id=m.id,
                        label=getattr(m, "display_name", None) or m.id,
                        context_window=getattr(m, "max_input_tokens", None),
                        params=self.accepts,
                        supports_tools=True,
                        vision=vision,
                        pdf=pdf,
                    )
                )
        return out


def mark_cache(body: dict[str, Any]) -> None:
    """Put prompt-cache breakpoints on a request body, in place (at most MAX_BREAKPOINTS).

    The cache is a prefix in the order tools → system → messages, and a breakpoint caches everything up
    to it. Marked: the last tool and the system prompt (stable across a conversation), the last block of
    the final message (written now, so the next turn can read it), and the last block of the message
    three from the end: the previous request of this conversation ended there (the user message before
    the last reply, or a tool loop's previous step), so its breakpoint falls exactly where the previous
    request's last one did and this request reads the whole conversation so far from the cache without
    relying on the API's 20-block lookback. A prefix under the model's minimum (1,024 to 4,096 tokens)
    is silently not cached by the API and costs nothing extra.
    """
    tools = body.get("tools")
    if tools:
        tools[-1] = {**tools[-1], "cache_control": dict(EPHEMERAL)}
    system = body.get("system")
    if isinstance(system, str) and system:
        body["system"] = [{"type": "text", "text": system, "cache_control": dict(EPHEMERAL)}]
    messages = body.get("messages") or []
    for index in (len(messages) - 3, len(messages) - 1):
        if index >= 0:
            _mark_message(messages, index)


def _mark_message(messages: list[dict[str, Any]], index: int) -> None:
    """Mark the last block of messages[index] that may carry a breakpoint (a string content becomes a text block)."""
    message = messages[index]
    content = message["content"]
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    for i in range(len(blocks) - 1, -1, -1):
        if blocks[i].get("type") not in _UNCACHEABLE:
            blocks[i] = {**blocks[i], "cache_control": dict(EPHEMERAL)}
            messages[index] = {**message, "content": blocks}
            return


async def _post_json(client: Any, content: list[bytes]) -> Any:
    """POST /v1/messages with a body already written as JSON: what `messages.create(stream=True)` sends
    (the SDK's headers, auth and typed errors) and returns (the stream of raw events), without
    serialising megabytes of base64 on the event loop."""
    from anthropic import AsyncStream
    from anthropic.types import Message as WireMessage
    from anthropic.types import RawMessageStreamEvent

    pieces, headers = files.sending(content)
    return await client.post(
        "/v1/messages", content=pieces, options={"headers": headers}, cast_to=WireMessage, stream=True,
        stream_cls=AsyncStream[RawMessageStreamEvent],
    )


def _body_kind(body: Any) -> str | None:
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(kind := err.get("type"), str):
            return kind
    return None


def to_anthropic_messages(
    messages: Sequence[Message], info: ModelInfo | None = None, label: str = "Anthropic"
) -> list[dict[str, Any]]:
    """Our messages as alternating user/assistant turns; tool results become user tool_result blocks.

    The API requires alternation, so consecutive same-role messages are merged into one. A user message
    with files gets `image` and `document` blocks (base64) before its text (chat.providers._attachments);
    without `info`, the model is taken to read images and PDFs.
    """
    out = _anthropic_messages(messages, info, label)
    return files.materialize(out) if files.has_attachments(messages) else out


def _anthropic_messages(messages: Sequence[Message], info: ModelInfo | None, label: str) -> list[dict[str, Any]]:
    prepared = files.prepared_items(messages, info, files.ANTHROPIC, label, "anthropic")
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for i, m in enumerate(messages):
        if m.role == "system":
            continue
        blocks: list[dict[str, Any]] = []
        role: str
        if i in prepared:
            role = m.role
            blocks.extend(files.anthropic_blocks(m.content, prepared[i]))
        elif m.role == "tool":
            role = "user"
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content}
            if m.is_error:
                result["is_error"] = True
            blocks.append(result)
        else:
            role = m.role
            for c in m.tool_calls if m.role == "assistant" else ():
                # Thinking first, as the model wrote it: the API checks these blocks within a tool loop.
                blocks.extend(dict(b) for b in (c.thinking if isinstance(c, ThinkingCall) else ()))
            if m.content.strip():
                blocks.append({"type": "text", "text": m.content})
            for c in m.tool_calls if m.role == "assistant" else ():
                blocks.append({"type": "tool_use", "id": c.id, "name": c.name, "input": parse_args(c.arguments)})
        if not blocks:
            continue  # the API refuses empty text blocks
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    out: list[dict[str, Any]] = []
    for role, blocks in turns:
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            out.append({"role": role, "content": blocks[0]["text"]})
        else:
            out.append({"role": role, "content": blocks})
    return out
