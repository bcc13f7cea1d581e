"""OpenAI Chat Completions, for api.openai.com and every OpenAI-compatible endpoint (Ollama, vLLM, OpenRouter, ...),
and OpenAI's Responses API for its reasoning models (chat.providers.openai_responses reads those streams)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import logging
from collections.abc import AsyncGenerator, Sequence
from typing import Any
from urllib.parse import urlparse

from chat.errors import ChatError
from chat.pace import PACE
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
    retry_after,
    sdk_missing,
    transport_failure,
    weak_builder,
)
from chat.providers._http import sdk_http_client
from chat.providers.base import Provider
from chat.providers.openai_models import (
    _NOT_CHAT,
    _SAMPLING,
    API_STYLES,
    _official_models,
    compatible_params,
    reads_files,
    reasoning_params,
)
from chat.providers.openai_responses import EventReader, StreamFailed, responses_body
from chat.providers.openai_stream import Body, ChunkReader, sse_data
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

OFFICIAL_BASE_URL = "https://api.openai.com/v1"

log = logging.getLogger("parley.providers.openai")



class OpenAIProvider(Provider):
    """Streams Chat Completions through the official `openai` SDK; one class for every compatible endpoint."""

    name = "openai"
    label = "OpenAI"
    key_env_var: str | None = "OPENAI_API_KEY"  # None for a local server that takes no key
    accepts = frozenset({"temperature", "top_p", "max_tokens", "seed", "effort"})
    supports_tools = True

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        name: str | None = None,
        label: str | None = None,
        key_env_var: str | None = "OPENAI_API_KEY",
        models: Sequence[str | ModelInfo] | None = None,
        context_window: int | None = None,
        include_usage: bool = True,
        official: bool | None = None,
        send_effort: bool | None = None,
        openai_names: bool | None = None,
        base_url_env_var: str | None = "OPENAI_BASE_URL",
        connect_timeout: float = 5.0,
        read_timeout: float | None = 600.0,
        list_timeout: float = 3.0,
        vision: bool = False,
        pdf: bool = False,
        api: str = "auto",
    ):
        """`official` defaults to "base_url is api.openai.com"; it picks `max_completion_tokens` and the curated list.

        `openai_names` (default: `official`): model names are OpenAI's, so a reasoning model is known by its
        family name (effort, no temperature, `max_completion_tokens`) also behind OPENAI_BASE_URL.

        `vision` / `pdf`: whether a compatible endpoint's models not listed in `models` read images / PDFs
        (models.toml); official OpenAI models are known by their family names.

        `api` (API_STYLES): "auto" sends OpenAI's reasoning models on api.openai.com through the Responses API
        (reasoning summaries, reasoning kept across tool steps) and everything else through Chat Completions;
        "chat" or "responses" sends every model one way (models.toml `api`, OPENAI_API_STYLE).
        """
        if api not in API_STYLES:
            raise ValueError(f"api must be one of {', '.join(API_STYLES)}, not {api!r}")
        self.api = api
        self.name = name or type(self).name
        self.label = label or type(self).label
        self.key_env_var = key_env_var
        self.base_url = (base_url or OFFICIAL_BASE_URL).rstrip("/")
        self.official = official if official is not None else urlparse(self.base_url).hostname == "api.openai.com"
        self.send_effort = self.official if send_effort is None else send_effort
        self.openai_names = self.official if openai_names is None else openai_names
        # Every model's own params (ModelInfo.params) say which of these it takes: a compatible endpoint's
        # model named like an OpenAI reasoning model takes an effort even where the endpoint's others do not.
        self.accepts = frozenset(_SAMPLING | {"effort"})
        self.include_usage = include_usage
        self.context_window = context_window
        self.base_url_env_var = base_url_env_var
        self._api_key = api_key or "not-needed"  # local servers take any key, but the SDK insists on one
        self._timeouts = (connect_timeout, read_timeout)
        self._list_timeout = list_timeout
        self.vision, self.pdf = vision, pdf
        self._models = [self._info(m) for m in models] if models is not None else None
        self._client = LoopClient(self._build_client)
        self._no_summaries = False  # the Responses API refused reasoning summaries (organization not verified)

    # -- what it is -------------------------------------------------------------------------

    @staticmethod
    def sdk_missing() -> str | None:
        """Why this provider cannot run here (the SDK is not installed), else None."""
        return sdk_missing("openai", "openai", "OpenAI and OpenAI-compatible endpoints")

    def _info(self, m: str | ModelInfo) -> ModelInfo:
        if isinstance(m, ModelInfo):
            return m.model_copy(update={"provider": self.name})
        reads = reads_files(m) if self.official else None
        if self.openai_names:  # OpenAI's own names: an effort for its reasoning models only (gpt-4o refuses one)
            params = reasoning_params(m) or _SAMPLING
        else:
            params = compatible_params(m, effort=self.send_effort)
        if self.uses_responses(m):
            params = params - {"seed"}  # the Responses API takes no seed
        return ModelInfo(
            provider=self.name, id=m, label=m, context_window=self.context_window,
            params=params, supports_tools=self.supports_tools,
            vision=self.vision if reads is None else reads, pdf=self.pdf if reads is None else reads,
        )

    def uses_responses(self, model: str) -> bool:
        """Whether `model` is called through the Responses API (else Chat Completions)."""
        if self.api == "auto":  # o1-mini and o1-preview (no effort, no summaries) stay on Chat Completions
            return self.official and "effort" in (reasoning_params(model) or ())
        return self.api == "responses"

    def curated(self) -> list[ModelInfo]:
        if self._models is not None:
            return list(self._models)
        return _official_models() if self.official else []

    def model_info(self, model: str) -> ModelInfo:
        for info in self.curated():
            if info.id == model:
                return info
        return self._info(model)

    # -- the client ---------------------------------------------------------------------------

    def _build_client(self) -> Any:
        openai = import_sdk("openai", "openai", self.label)
        import httpx2

        connect, read = self._timeouts
        timeout = httpx2.Timeout(connect=connect, read=read, write=30.0, pool=30.0)
        return openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.base_url,
            max_retries=0,  # the turn runner owns retries
            timeout=timeout,
            **sdk_http_client(openai, timeout),
        )

    def warm(self) -> None:
        self._client.get()

    async def moderate(self, text: str) -> list[str]:
        """The moderation categories the text is flagged for (empty when it is fine)."""
        state = StreamState()
        with error_boundary(state, lambda e, s: self._map_error(e, s, "(moderation)")):
            result = await self._client.get().moderations.create(input=text)
        flagged: list[str] = []
        for item in result.results:
            if item.flagged:
                cats = item.categories.model_dump() if hasattr(item.categories, "model_dump") else dict(item.categories)
                hits = [name for name, hit in cats.items() if hit]
                # A result flagged with no category set still has to refuse: name it generically.
                flagged.extend(hits or ["flagged"])
        return flagged

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
        setting = self.base_url_env_var or f"the base_url of '{self.name}' in models.toml"
        return Who(self.label, self.key_env_var, model, None if self.base_url == OFFICIAL_BASE_URL else self.base_url, setting,
                   pasted_key=self.key_pasted)

    def _map_error(self, e: Exception, state: StreamState, model: str) -> ChatError | None:
        import openai

        who = self._who(model)
        if isinstance(e, openai.APIStatusError):
            body = e.body
            return classify(
                Failure(
                    status=e.status_code,
                    kind=_kind(e.code, e.type, body),
                    message=error_message(body, e.message),
                    retry_after=retry_after(e.response.headers),
                ),
                who,
                started=state.started,
            )
        if isinstance(e, openai.APIConnectionError):  # includes APITimeoutError
            return transport_failure(e, who, started=state.started)
        if isinstance(e, openai.APIError):  # an error object inside the 200 stream: no status
            return classify(
                Failure(status=None, kind=_kind(e.code, e.type, e.body), message=error_message(e.body, e.message)),
                who,
                started=state.started,
            )
        if is_transport_error(e):
            return transport_failure(e, who, started=state.started)
        return None

    # -- the request --------------------------------------------------------------------------

    def request(
        self, model: str, messages: Sequence[Message], params: Params, tools: Sequence[ToolSpec] = ()
    ) -> dict[str, Any]:
        """The Chat Completions body, as `chat.completions.create` takes it as keywords (public so tests and benches
        can inspect it); `responses_request` is the body for a model that `uses_responses`."""
        body = self._body(model, messages, params, tools)
        return files.materialize(body) if files.has_attachments(messages) else body

    def _body(
        self, model: str, messages: Sequence[Message], params: Params, tools: Sequence[ToolSpec] = ()
    ) -> dict[str, Any]:
        """The request body, its files still as `_attachments.Blob`s (written late, in pieces)."""
        info = self.model_info(model)
        kwargs: dict[str, Any] = {
            "model": model, "messages": _openai_messages(messages, info, self.label), "stream": True,
        }
        if self.include_usage:
            kwargs["stream_options"] = {"include_usage": True}
        sent = params.for_provider(info.params & self.accepts)
        for key in ("temperature", "top_p", "seed"):
            if key in sent:
                kwargs[key] = sent[key]
        if "max_tokens" in sent:
            # The official API deprecated max_tokens (reasoning models refuse it); compatible servers know only max_tokens.
            # A reasoning model behind a proxy refuses max_tokens just the same.
            newer = self.official or (self.openai_names and reasoning_params(model) is not None)
            kwargs["max_completion_tokens" if newer else "max_tokens"] = sent["max_tokens"]
        if "effort" in sent:
            kwargs["reasoning_effort"] = sent["effort"]
        if tools:
            kwargs["tools"] = [
                {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
                for t in tools
            ]
        return kwargs

    def responses_request(
        self, model: str, messages: Sequence[Message], params: Params, tools: Sequence[ToolSpec] = ()
    ) -> dict[str, Any]:
        """The Responses API body, as `responses.create` takes it as keywords (files written out).

        Stateless: `store=False`, and a reasoning model's reasoning comes back encrypted (`include`) so that the
        next tool step can send it back. A reasoning model is asked for a summary of its reasoning, which the
        reasoning block shows.
        """
        info = self.model_info(model)
        body = responses_body(model, info, messages, params.for_provider(info.params & self.accepts), self.label, tools)
        return files.materialize(body) if files.has_attachments(messages) else body

    async def stream(
        self,
        model: str,
        messages: Sequence[Message],
        params: Params,
        *,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncGenerator[StreamEvent, None]:
        if self.uses_responses(model):
            async for event in self._stream_responses(model, messages, params, tools):
                yield event
            return
        body: dict[str, Any] | None = None
        content: list[bytes] | None = None
        if files.has_attachments(messages):
            # Scaling, base64 and the JSON of megabytes of files: in a worker thread, not on the event loop
            # that streams everyone else's replies. The SDK sends the bytes as they are (`content`).
            content = await asyncio.to_thread(self._request_bytes, model, messages, params, tools)
        else:
            body = self.request(model, messages, params, tools)
        state = StreamState()
        reader = ChunkReader()
        with error_boundary(state, lambda e, s: self._map_error(e, s, model)):
            import httpx2  # the SDK's own HTTP library (imported with it)

            # The SDK sends the request (auth, headers, timeouts), raises its typed errors for a failed
            # status and hands back the unread response; the body is read here. Its documented `post`
            # for raw endpoints skips two costs of `chat.completions.create` that buy nothing here: a
            # type-driven walk over the whole request (~0.5 ms, growing with the conversation) and a
            # pydantic chunk per event (~90 µs each, once the largest cost of a stream in this process).
            if content is None:
                response = await self._client.get().post(
                    "/chat/completions", body=body, cast_to=httpx2.Response, stream=True
                )
            else:
                pieces, headers = files.sending(content)
                response = await self._client.get().post(
                    "/chat/completions", content=pieces, options={"headers": headers}, cast_to=httpx2.Response,
                    stream=True,
                )
            reader.request_id = response.headers.get("x-request-id") or None
            try:
                async for data in sse_data(response, direct_body(response)):
                    chunk = json.loads(data)
                    if isinstance(chunk, dict) and chunk.get("error"):
                        raise _stream_error(chunk["error"], response)
                    for event in reader.feed(chunk):
                        if not state.started and isinstance(event, (TextDelta, ReasoningDelta, ToolCallDelta)):
                            state.started = True
                        yield event
            finally:  # on cancellation and errors too: the connection must not stay open
                await response.aclose()
        for event in reader.end():
            yield event

    async def _stream_responses(
        self, model: str, messages: Sequence[Message], params: Params, tools: Sequence[ToolSpec]
    ) -> AsyncGenerator[StreamEvent, None]:
        """One reply from the Responses API (`POST /responses`, stream); errors mapped as for Chat Completions.

        Sent as the Chat Completions path sends (the SDK's `post`: auth, headers, timeouts, typed errors for a
        failed status) and read as plain JSON per event: `responses.create(stream=True)` builds a pydantic model
        per event from a union of some fifty event types, which measured ~7x the CPU per token of this path.
        """
        if files.has_attachments(messages):  # base64 of megabytes: off the event loop
            body = await asyncio.to_thread(self.responses_request, model, messages, params, tools)
        else:
            body = self.responses_request(model, messages, params, tools)
        state = StreamState()
        reader = EventReader()
        with error_boundary(state, lambda e, s: self._map_error(e, s, model)):
            import httpx2  # the SDK's own HTTP library (imported with it)

            try:
                response = await self._client.get().post("/responses", body=self._summary_fits(body),
                                                         cast_to=httpx2.Response, stream=True)
            except Exception as e:
                if not _summary_refused(e) or self._no_summaries:
                    raise
                # An organization OpenAI has not verified may not have reasoning summaries: the reply matters more
                # than the summary, so ask again without one, and from now on (until a restart) never ask.
                self._no_summaries = True
                log.warning("%s refused reasoning summaries (organization not verified); replies of its reasoning "
                            "models now come without them", self.label)
                response = await self._client.get().post("/responses", body=self._summary_fits(body),
                                                         cast_to=httpx2.Response, stream=True)
            try:
                async for data in sse_data(response, direct_body(response)):
                    event = json.loads(data)
                    if not isinstance(event, dict):
                        continue
                    try:
                        events = reader.feed(event)
                    except StreamFailed as failed:  # response.failed / error: as the SDK reports in-stream errors
                        raise _stream_error(failed.error, response) from None
                    for out in events:
                        if not state.started and isinstance(out, (TextDelta, ReasoningDelta, ToolCallDelta)):
                            state.started = True
                        yield out
            finally:  # on cancellation and errors too: the connection must not stay open
                await response.aclose()
            if reader.finish is not None and reader.finish.request_id is None:
                rid = response.headers.get("x-request-id") or None
                reader.finish = dataclasses.replace(reader.finish, request_id=rid)
        for event in reader.end():
            yield event

    def _summary_fits(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body without the reasoning-summary request once the API refused summaries to this key."""
        if not self._no_summaries or "summary" not in body.get("reasoning", {}):
            return body
        reasoning = {k: v for k, v in body["reasoning"].items() if k != "summary"}
        return {**body, "reasoning": reasoning}

    def _request_bytes(
        self, model: str, messages: Sequence[Message], params: Params, tools: Sequence[ToolSpec]
    ) -> list[bytes]:
        """The request body as JSON in pieces, as the SDK would write it (its `openapi_dumps` settings)."""
        return files.dumps(self._body(model, messages, params, tools))

    async def list_models(self) -> list[ModelInfo]:
        state = StreamState()
        with error_boundary(state, lambda e, s: self._map_error(e, s, "(listing)")):
            page = await self._client.get().models.list(timeout=self._list_timeout)
            ids = sorted({m.id for m in page.data})
        if self.official:
            ids = [i for i in ids if not any(word in i for word in _NOT_CHAT)]
        # The curated (or models.toml) entries first, so a long listing (OpenRouter) does not bury them.
        curated = [m for m in self.curated() if m.id in ids]
        first = {m.id for m in curated}
        return curated + [self.model_info(i) for i in ids if i not in first]


def _kind(code: Any, type_: Any, body: Any) -> str | None:
    """The most specific vendor error kind: `code` (e.g. context_length_exceeded) before `type`."""
    for value in (code, type_):
        if isinstance(value, str) and value:
            return value
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            for key in ("code", "type", "status"):
                if isinstance(value := err.get(key), str):
                    return value
    return None


def _summary_refused(e: Exception) -> bool:
    """Whether a failed request was refused for asking a reasoning summary (param `reasoning.summary`, as for an
    organization OpenAI has not verified)."""
    import openai

    if not isinstance(e, openai.BadRequestError):
        return False
    body = e.body if isinstance(e.body, dict) else {}
    err = body.get("error", body)  # the SDK hands over the inner error object; a raw body nests it
    return e.param == "reasoning.summary" or (isinstance(err, dict) and err.get("param") == "reasoning.summary")


def _stream_error(error: Any, response: Any) -> Exception:
    """An error object inside a 200 stream, as the SDK reports it (an `APIError` with the body)."""
    import openai

    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        message = "An error occurred during streaming"
    return openai.APIError(message, response.request, body=error)


def to_openai_messages(
    messages: Sequence[Message], info: ModelInfo | None = None, label: str = "OpenAI"
) -> list[dict[str, Any]]:
    """Our messages in the Chat Completions shape (reasoning is not sent back).

    A user message with files becomes a list of parts (chat.providers._attachments): images as
    `image_url` data URLs, PDFs as `file` parts when `info.pdf` (else their extracted text), text files
    as text. Without `info`, the model is taken to read images and PDFs. A message without files keeps
    its plain string content.
    """
    out = _openai_messages(messages, info, label)
    return files.materialize(out) if files.has_attachments(messages) else out


def _openai_messages(messages: Sequence[Message], info: ModelInfo | None, label: str) -> list[dict[str, Any]]:
    prepared = files.prepared_items(messages, info, files.OPENAI, label, "openai")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if i in prepared:
            out.append({"role": m.role, "content": files.openai_content(m.content, prepared[i])})
        elif m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content})
        elif m.role == "assistant" and m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.content or None,
                    "tool_calls": [
                        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                        for c in m.tool_calls
                    ],
                }
            )
        else:
            out.append({"role": m.role, "content": m.content})
    return out


class _AiohttpBody:
    """The body of a response the SDK's aiohttp client received, read from aiohttp itself (`sse_data`'s `body`).

    The SDK hands back an httpx2 response whose body is aiohttp's: reading it through httpx2 costs four
    generator layers per network read, and only aiohttp can say when the body has ended, which is what lets
    a slow stream rest between reads (chat.pace) without finishing late. aiohttp's errors are mapped to
    httpx2's as the SDK's own stream maps them, so a connection lost mid-reply fails as it did.
    """

    __slots__ = ("_waiter", "content", "ended", "errors")

    def __init__(self, content: Any, errors: Any):
        self.content = content
        self.errors = errors
        self.ended = False
        self._waiter: asyncio.Future[None] | None = None  # the rest under way, woken early by the end
        content.on_eof(self._on_eof)

    def _on_eof(self) -> None:
        self.ended = True
        _wake(self._waiter)

    async def read(self) -> bytes:
        content = self.content
        with self.errors():
            try:
                data: bytes = await content.readany()
            except Exception:
                # A connection lost while the reader rested: aiohttp raises its error ahead of the bytes that came
                # before it, which are the reply's last tokens. Hand those over first; the next read raises.
                # Checked only on the error, so a read that succeeds costs nothing more.
                if getattr(content, "_buffer", None):
                    kept: bytes = content._read_nowait(-1)
                    return kept
                raise
            return data

    async def rest(self, until: float) -> None:
        # A future and a timer: a rest happens about once per update of every slow stream, and
        # `timeout_at` around an Event costs a timeout object, a cancellation and an exception each time.
        # A lost connection does not wake it (aiohttp drops its end-of-body callbacks then): the reader
        # finds the error at the next update, its bytes still read first.
        if self.ended or self.content.exception() is not None:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_at(until, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def direct_body(response: Any) -> Body | None:
    """The response's body as aiohttp has it, when it came through the SDK's aiohttp client unencoded; else None
    (httpx2's own client, a compressed body, or an SDK whose stream is built differently: read through httpx2)."""
    inner = getattr(getattr(response, "stream", None), "_stream", None)
    aiohttp_response = getattr(inner, "_aiohttp_response", None)
    content = getattr(aiohttp_response, "content", None)
    if content is None or not hasattr(content, "readany") or not hasattr(content, "on_eof"):
        return None
    if response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
        return None  # aiohttp was told not to decompress (httpx2 decodes): leave it to httpx2
    from openai._vendor.httpx_aiohttp.transport import map_aiohttp_exceptions

    if PACE.get() is not None:
        # A reply shown as it streams (chat.turn.Turn.updates), under the turn's own first-token and idle
        # deadlines: aiohttp's read timeout would only repeat the idle one, at the price of a timer cancelled
        # and made again for every packet. The connection's next request sets its own timeout again.
        protocol = getattr(getattr(aiohttp_response, "connection", None), "protocol", None)
        if protocol is not None and hasattr(protocol, "read_timeout") and hasattr(protocol, "_drop_timeout"):
            protocol.read_timeout = None
            protocol._drop_timeout()
    return _AiohttpBody(content, map_aiohttp_exceptions)


__all__ = ["API_STYLES", "direct_body", "OpenAIProvider", "ChunkReader", "compatible_params", "reasoning_params", "sse_data",
           "to_openai_messages", "OFFICIAL_BASE_URL"]
