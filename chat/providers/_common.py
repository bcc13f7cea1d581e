"""Shared pieces of the provider adapters: error classification and small helpers (no SDK imports)."""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from chat.errors import (
    AuthError,
    BadRequest,
    ChatError,
    ContextTooLong,
    ModelNotFound,
    NetworkError,
    NotConfigured,
    Overloaded,
    RateLimited,
    SafetyBlocked,
    StreamError,
)
from chat.types import Message

# Status codes worth another try: the server was busy or failed, not the request.
_RETRYABLE_STATUSES = frozenset({408, 409, 425, 499, 500, 502, 503, 504, 520, 522, 524, 529})

_CONTEXT_WORDING = re.compile(
    r"context[_ ]length|context window|maximum context|prompt is too long|too many tokens|"
    r"exceeds the maximum number of tokens|input token count|reduce the length|token limit",
    re.IGNORECASE,
)
_MODEL_MISSING_WORDING = re.compile(
    r"model[^.]{0,80}(not found|does not exist)|(unknown|invalid) model\b|no such model",
    re.IGNORECASE,
)
_OVERLOAD_KINDS = ("overloaded", "server_error", "api_error", "internal", "unavailable", "timeout", "deadline")
_RATE_KINDS = ("rate_limit", "resource_exhausted", "too_many_requests")


@dataclass(slots=True)
class StreamState:
    """What one stream has done so far; the error boundary reads it to tell retryable failures from cut-off replies."""

    #: At least one piece of content (text, reasoning or tool call) was handed to the caller.
    started: bool = False


@dataclass(slots=True, frozen=True)
class Failure:
    """A vendor failure reduced to the fields the classification needs."""

    status: int | None = None  # HTTP status (None for an error event inside a 200 stream)
    kind: str | None = None  # vendor error type/code, e.g. "overloaded_error", "context_length_exceeded"
    message: str = ""
    retry_after: float | None = None


@dataclass(slots=True, frozen=True)
class Who:
    """The provider facts an error message needs."""

    label: str
    env_var: str | None
    model: str
    base_url: str | None = None  # shown in network errors when it is not the vendor's default
    base_url_setting: str | None = None  # where the base URL is set, e.g. "OPENAI_BASE_URL"
    pasted_key: bool = False  # the key is the user's own, pasted in the app (not the server's env_var)


def classify(f: Failure, who: Who, *, started: bool) -> ChatError:
    """Turn a vendor failure into one of our typed errors, with a message a user can act on."""
    label, msg = who.label, _short(f.message)
    kind = (f.kind or "").lower()
    if started:
        # Something was already shown: a retry would duplicate it, so the runner must not retry.
        return StreamError(
            f"{label} reported an error mid-reply ({msg or kind or f.status}); the reply was cut off. "
            "Press Retry to try again.",
            provider=label,
        )
    if f.status in (None, 200):
        # An error event inside an accepted stream carries no HTTP status: classify by its type.
        if any(k in kind for k in _RATE_KINDS):
            return RateLimited(provider=label, retry_after=f.retry_after)
        if any(k in kind for k in _OVERLOAD_KINDS):
            return Overloaded(
                f"{label} is overloaded or failing right now ({msg or kind}). Try again shortly.",
                provider=label,
                retry_after=f.retry_after,
            )
        if "context_length" in kind or _CONTEXT_WORDING.search(f.message):
            return ContextTooLong(provider=label)
        return StreamError(
            f"{label} reported an error before replying: {msg or kind or 'no details'}. Press Retry to try again.",
            provider=label,
        )
    status = f.status or 0
    if status in (401, 403) or "api_key_invalid" in kind or "authentication" in kind or "permission" in kind:
        return AuthError(provider=label, env_var=who.env_var, pasted=who.pasted_key)
    if "content_filter" in kind or "content_policy" in kind:
        # OpenAI's (and Azure's) prompt filter: a refusal of the message, which rephrasing fixes.
        return SafetyBlocked(provider=label)
    if status == 402 or "billing" in kind or "insufficient_quota" in kind:
        return BadRequest(
            f"{label} refused the request for billing reasons ({msg}). Check your plan and credits.", provider=label
        )
    if status == 404 or "model_not_found" in kind or (status in (400, 422) and _MODEL_MISSING_WORDING.search(f.message)):
        where = f" at {who.base_url}" if who.base_url and status == 404 and not _MODEL_MISSING_WORDING.search(f.message) else ""
        return ModelNotFound(who.model, provider=label, detail=(msg + where) or None)
    if status == 429:
        return RateLimited(provider=label, retry_after=f.retry_after)
    if status == 413 or "context_length" in kind or _CONTEXT_WORDING.search(f.message):
        return ContextTooLong(provider=label)
    if status in _RETRYABLE_STATUSES or status >= 500 or any(k in kind for k in _OVERLOAD_KINDS):
        return Overloaded(
            f"{label} is overloaded or failing right now (HTTP {status}{': ' + msg if msg else ''}). Try again shortly.",
            provider=label,
            retry_after=f.retry_after,
        )
    return BadRequest(f"{label} refused the request (HTTP {status}): {msg or kind}", provider=label)


def transport_failure(exc: BaseException, who: Who, *, started: bool) -> ChatError:
    """A connection that failed (refused, timed out, dropped) before or during the reply."""
    what = type(exc).__name__
    if started:
        return StreamError(
            f"The connection to {who.label} dropped mid-reply ({what}); the reply was cut off. Press Retry to try again.",
            provider=who.label,
        )
    where = f" at {who.base_url}" if who.base_url else ""
    setting = who.base_url_setting or "the base URL setting"
    return NetworkError(f"Could not reach {who.label}{where} ({what}): check the network and {setting}.", provider=who.label)


def is_transport_error(exc: BaseException) -> bool:
    """True for the raw httpx2 transport errors that anthropic and google-genai let through."""
    try:
        import httpx2
    except ImportError:  # pragma: no cover - every SDK in use depends on httpx2
        return False
    return isinstance(exc, (httpx2.TransportError, httpx2.StreamError))


@contextmanager
def error_boundary(state: StreamState, mapper: Callable[[Exception, StreamState], ChatError | None]) -> Iterator[StreamState]:
    """Map every vendor exception raised in the block to a chat error, always chained (`raise ... from e`)."""
    try:
        yield state
    except ChatError:
        raise
    except Exception as e:  # noqa: BLE001 - mapped or re-raised unchanged
        mapped = mapper(e, state)
        if mapped is None:
            raise
        raise mapped from e


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or HTTP date)."""
    if not headers:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
    except (TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - time.time())


def error_message(body: Any, fallback: str = "") -> str:
    """The human message inside a vendor error body, whatever its nesting."""
    if isinstance(body, Mapping):
        err = body.get("error", body)
        if isinstance(err, Mapping) and isinstance(message := err.get("message"), str):
            return message
        if isinstance(message := body.get("message"), str):
            return message
    if isinstance(body, str) and body:
        return body
    return fallback


def _short(text: str | None, limit: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sdk_missing(module: str, package: str, label: str) -> str | None:
    """An install hint when an optional SDK is absent, else None (checked without importing it)."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else f"install the {package} package (pip install {package}) to use {label}"


def import_sdk(module: str, package: str, label: str) -> Any:
    """Import a vendor SDK lazily, turning its absence into an actionable NotConfigured."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise NotConfigured(
            f"{label} is disabled because the {package} package is not installed: run `pip install {package}`.",
            provider=label,
        ) from e


def system_text(messages: list[Message] | tuple[Message, ...]) -> str | None:
    """All system messages joined (providers that take the system prompt apart from the turns)."""
    parts = [m.content for m in messages if m.role == "system" and m.content.strip()]
    return "\n\n".join(parts) or None


def parse_args(arguments: str) -> dict[str, Any]:
    """Tool-call arguments as a dict (a non-object or invalid JSON becomes {"_raw": text})."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_value": value}


def weak_builder(method: Callable[[], Any]) -> Callable[[], Any]:
    """A provider's client-building method, for its LoopClient, without a reference back to the provider: a
    provider that is dropped is then freed at once rather than at a later cycle collection, and its client
    closed (LoopClient.close_when_gone)."""
    import weakref

    ref = weakref.WeakMethod(method)  # a bound method, as every caller passes

    def build() -> Any:
        bound = ref()
        if bound is None:  # only the provider calls its LoopClient, so it is alive whenever this runs
            raise RuntimeError("the provider of this client is gone")
        return bound()

    return build


class LoopClient:
    """One SDK client, built lazily and reused; rebuilt only if the event loop changed.

    httpx2 connection pools belong to the loop that opened them, so a client built under
    one `asyncio.run` (say, model listing at start-up) must not serve another loop.
    Building is serialised by a lock: the start-up warm thread and the first request may
    ask at the same moment, and a second client built then would replace the first one while
    a stream reads from it (its finaliser closes the pool under the stream).
    """

    __slots__ = ("_factory", "_closer", "_client", "_loop", "_lock")

    def __init__(self, factory: Callable[[], Any], closer: Callable[[Any], Any] | None = None):
        import threading

        self._factory = factory
        self._closer = closer
        self._client: Any = None
        self._loop: Any = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._client is not None

    def get(self) -> Any:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # warm(), from a worker thread
        client = self._client
        if client is not None and self._usable_from(loop):
            return client
        with self._lock:
            if self._client is None or not self._usable_from(loop):
                self._client = self._factory()
                self._loop = loop
            return self._client

    def _usable_from(self, loop: Any) -> bool:
        """Whether the current client may serve `loop`: warm() (no loop) reuses any client, never replaces it."""
        return loop is None or self._loop is None or self._loop is loop

    def close_when_gone(self, owner: object) -> None:
        """Close the client once `owner` (the provider holding this) has been collected: a provider dropped
        from a cache (chat.registry's users' own keys) may still be streaming a reply, and closing its client
        then would cut that reply off. Nothing the finaliser keeps refers back to `owner`, so it can be
        collected. A client built after this call (a turn that resolved the provider just before) is left to
        the garbage collector, as every client was before."""
        import weakref

        if self._client is not None and self._loop is not None:
            # Not at exit: the loop is stopping then (Registry.aclose closes the clients still cached).
            weakref.finalize(owner, _close_on_loop, self._loop, self._client, self._closer).atexit = False

    async def aclose(self) -> None:
        import asyncio

        client, self._client = self._client, None
        if client is None:
            return
        try:
            same_loop = self._loop is None or self._loop is asyncio.get_running_loop()
        except RuntimeError:
            same_loop = False
        if not same_loop:
            return  # its pool belongs to a loop that is gone or elsewhere; let it be collected
        await _close(client, self._closer)


_closing: set[Any] = set()  # the close tasks under way (a task only weakly referenced can be collected mid-run)


async def _close(client: Any, closer: Callable[[Any], Any] | None) -> None:
    result = closer(client) if closer else client.close()
    if hasattr(result, "__await__"):
        await result


def _close_on_loop(loop: Any, client: Any, closer: Callable[[Any], Any] | None) -> None:
    """Close an SDK client on the event loop its connection pool belongs to (from a finaliser: any thread)."""
    import asyncio

    def start() -> None:
        task = asyncio.ensure_future(_close(client, closer))
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    if not loop.is_closed():
        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop closed in between: its pool went with it
            pass
