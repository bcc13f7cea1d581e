"""Gradio session hashes bound to the identity that first used them (`SessionGuard`, an ASGI middleware).

Gradio 6.31 treats a `session_hash` as a bearer secret: whoever sends it may read that session's
event stream (`/gradio_api/queue/data`), queue events that read and write its state, cancel its
events, or close it. Anyone who learns one (a shared screen, a log line, a proxy) could read
another user's live reply. Here the first request that names a session binds it to its caller,
and a later request from anyone else gets a 403 before Gradio sees it, so nothing is queued,
cancelled or streamed for them.

Who the caller is, most trusted first:

1. the login name, when `APP_USERS` is set: read from Gradio's own `access-token` cookie and
   Gradio's in-memory token table, exactly as Gradio's `/user` route reads it;
2. otherwise a random 144-bit browser id in an HttpOnly cookie that this middleware sets on the
   page and on `/config` (where `gradio_client` picks cookies up). Knowing a session hash does not
   reveal it, and page scripts cannot read it;
3. otherwise (a client that keeps no cookies) the client address. A session bound to an address
   accepts any caller from that address, so a client that gets its cookie after its first
   request keeps its session. This is the weak case: callers behind one NAT or proxy share it.

Hugging Face OAuth users are bound by (2), per browser, which is stricter than per user.

The table lives in the process, which fits Parley's replicas: sticky sessions send a browser to
one replica, and Gradio's queue for that session is in that replica anyway. It is an LRU capped
at `capacity` entries; a session with an open stream (its heartbeat, which every open page holds,
or its event stream) is never evicted, so flooding the table cannot free a live session for
someone else to claim.

The routes are Gradio 6.31's; a session-scoped route added by a later Gradio is not covered.
"""

from __future__ import annotations

import json
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request, cookie_parser

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API = "/gradio_api/"
#: Two cookies with one value, as Gradio does for its login: the secure one works in an iframe
#: over https (Spaces), the other over plain http, where browsers drop `Secure` cookies.
COOKIE = "parley-browser"
COOKIE_UNSECURE = "parley-browser-unsecure"
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{22,64}$")
#: ~300 bytes an entry: 100,000 sessions is about 30 MB, ten times Gradio's own session cap.
DEFAULT_CAPACITY = 100_000
REFUSED = b'{"detail":"This session belongs to another user. Reload the page to start your own."}'

# Routes whose body names the session: queue/join, cancel, run|api/<name>, call/<name>, component_server.
_BODY_ROUTES = re.compile(r"^(queue/join|cancel|component_server|(run|api)/[^/]+|call/(v2/)?[^/]+)/?$")
# GET call[/v2]/<name>/<event_id>: an event's result stream.
_EVENT_STREAM = re.compile(r"^call/(?:v2/[^/]+|(?!v2/)[^/]+)/([^/]+)$")
# POST stream/<event_id>[/close]: input to a streaming event.
_EVENT_INPUT = re.compile(r"^stream/([^/]+)(?:/close)?$")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: `principal` is what a new binding records."""

    principal: str  # "user:<name>", "browser:<cookie>" or "addr:<ip>"
    address: str

    def owns(self, bound: str) -> bool:
        if bound == self.principal:
            return True
        # An address binding was all that caller could offer: the address is what it holds.
        return bound.startswith("addr:") and bound[5:] == self.address


class SessionBindings:
    """session key -> principal, LRU-bounded; keys with an open stream are pinned against eviction."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._pins: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._owners)

    def admit(self, key: str, caller: Caller) -> bool:
        """Bind `key` to `caller` if it is new; whether `caller` may use it."""
        bound = self._owners.get(key)
        if bound is None:
            self._owners[key] = caller.principal
            self._evict()
            return True
        if not caller.owns(bound):
            return False
        self._owners.move_to_end(key)
        return True

    def owner(self, key: str) -> str | None:
        return self._owners.get(key)

    def pin(self, key: str) -> None:
        self._pins[key] = self._pins.get(key, 0) + 1

    def unpin(self, key: str) -> None:
        left = self._pins.get(key, 0) - 1
        if left > 0:
            self._pins[key] = left
        else:
            self._pins.pop(key, None)
            if key in self._owners:  # a stream just ended: it was in use until now
                self._owners.move_to_end(key)

    def _evict(self) -> None:
        # Each pinned entry met is moved to the end, so a full scan ends the loop: O(1) amortised.
        for _ in range(len(self._owners)):
            if len(self._owners) <= self.capacity:
                return
            key, owner = self._owners.popitem(last=False)
            if key in self._pins:
                self._owners[key] = owner


class SessionGuard:
    """ASGI middleware: refuse (403) a request that names a session bound to someone else."""

    def __init__(self, app: ASGIApp, capacity: int = DEFAULT_CAPACITY) -> None:
        self.app = app
        self.bindings = SessionBindings(capacity)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = _relative_path(scope)
        if not path.startswith(API):
            if scope["method"] == "GET" and path in ("/", "/config", "/config/"):
                return await self.app(scope, receive, _with_browser_cookie(scope, send))
            return await self.app(scope, receive, send)
        route, method = path[len(API):], scope["method"]
        if method == "POST" and _BODY_ROUTES.match(route):
            return await self._body_route(scope, receive, send, route)
        keys, streams = self._keys_from_url(scope, route, method)
        if not keys:
            return await self.app(scope, receive, send)
        caller = caller_of(scope)
        if not all(self.bindings.admit(k, caller) for k in keys):
            return await _refuse(send)
        if not streams:
            return await self.app(scope, receive, send)
        for k in keys:
            self.bindings.pin(k)
        try:
            await self.app(scope, receive, send)
        finally:
            for k in keys:
                self.bindings.unpin(k)

    def _keys_from_url(self, scope: Scope, route: str, method: str) -> tuple[list[str], bool]:
        """The session keys a URL names, and whether the response is a long-lived stream."""
        if method == "GET":
            if route in ("queue/data", "deep_link"):
                return _query(scope, "session_hash"), route == "queue/data"
            if route.startswith("heartbeat/"):
                return [route[len("heartbeat/"):]], True
            if route.startswith("stream/") and route.count("/") >= 4:  # media segments of a session
                return [route.split("/", 2)[1]], False
            if route == "upload_progress":
                return ["upload:" + u for u in _query(scope, "upload_id")], False
            if m := _EVENT_STREAM.match(route):
                return [_event_session(scope, m.group(1))], True
        elif method == "POST":
            if route == "upload":
                return ["upload:" + u for u in _query(scope, "upload_id")], False
            if m := _EVENT_INPUT.match(route):
                return [_event_session(scope, m.group(1))], False
        return [], False

    async def _body_route(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        body = await _read_body(receive)
        replay = _replay(body, receive)
        session = await _body_session(scope, body)
        caller = caller_of(scope)
        if session is not None and not self.bindings.admit(session, caller):
            return await _refuse(send)
        if session is None and route.startswith("call/"):
            # Without a session hash the event's id is its session (gradio.queueing.Event): bind that
            # id to the caller before the client can learn it.
            return await self.app(scope, replay, _binding_event_id(send, self.bindings, caller))
        await self.app(scope, replay, send)


def middleware() -> Any:
    """The entry for `launch(app_kwargs={"middleware": [...]})`: innermost of Gradio's middleware."""
    from starlette.middleware import Middleware

    return Middleware(SessionGuard)


# -- who is calling -----------------------------------------------------------------------------


def caller_of(scope: Scope) -> Caller:
    cookies = _cookies(scope)
    client = scope.get("client")
    address = str(client[0]) if client else "unknown"
    user = _login_name(scope, cookies)
    if user:
        return Caller(f"user:{user}", address)
    browser = cookies.get(COOKIE) or cookies.get(COOKIE_UNSECURE)
    if browser and _COOKIE_VALUE.match(browser):
        return Caller(f"browser:{browser}", address)
    return Caller(f"addr:{address}", address)


def _login_name(scope: Scope, cookies: dict[str, str]) -> str | None:
    """The login as Gradio's `/user` route finds it (the app is Gradio's `App`, set by Starlette)."""
    app = scope.get("app")
    tokens = getattr(app, "tokens", None)
    if not tokens:
        return None
    cookie_id = getattr(app, "cookie_id", "")
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    user = tokens.get(token) if token else None
    return str(user) if user else None


def _cookies(scope: Scope) -> dict[str, str]:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            return cookie_parser(value.decode("latin-1"))
    return {}


# -- request and response plumbing -------------------------------------------------------------


def _relative_path(scope: Scope) -> str:
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _query(scope: Scope, name: str) -> list[str]:
    # Every value: FastAPI reads the last of repeated parameters, and all must belong to the caller.
    return parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name, [])


def _event_session(scope: Scope, event_id: str) -> str:
    """The session an event belongs to, found as Gradio's `/call/<name>/<event_id>` route finds it."""
    app: Any = scope.get("app")
    queue = getattr(app.get_blocks(), "_queue", None) if hasattr(app, "get_blocks") else None
    if queue is None:
        return event_id
    event = queue.event_ids_to_events.get(event_id)
    if event is not None:
        session: str = event.session_hash
        return session
    return next((s for s, ids in queue.pending_event_ids_session.items() if event_id in ids), event_id)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body already read, then the real channel (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _body_session(scope: Scope, body: bytes) -> str | None:
    """`session_hash` from a JSON body, or from a multipart form (component_server with files)."""
    content_type = dict(scope.get("headers", ())).get(b"content-type", b"")
    if content_type.startswith(b"multipart/form-data"):
        request = Request(scope, _replay(body, _never))
        async with request.form() as form:
            value = form.get("session_hash")
        return value if isinstance(value, str) else None
    try:
        data = json.loads(body)  # the parser FastAPI uses, so duplicate keys resolve alike
    except ValueError:
        return None  # Gradio refuses it too
    value = data.get("session_hash") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


async def _never() -> Message:
    return {"type": "http.disconnect"}


async def _refuse(send: Send) -> None:
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(REFUSED)).encode())]})
    await send({"type": "http.response.body", "body": REFUSED})


def _with_browser_cookie(scope: Scope, send: Send) -> Send:
    """Set the browser-id cookies on the page (or /config) response when the caller has none."""
    cookies = _cookies(scope)
    if _COOKIE_VALUE.match(cookies.get(COOKIE) or cookies.get(COOKIE_UNSECURE) or ""):
        return send
    value = secrets.token_urlsafe(18)
    headers = [
        (b"set-cookie", f"{COOKIE}={value}; Path=/; HttpOnly; Secure; SameSite=None; Partitioned".encode()),
        (b"set-cookie", f"{COOKIE_UNSECURE}={value}; Path=/; HttpOnly; SameSite=Lax".encode()),
    ]

    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start" and message.get("status", 200) < 400:
            message = {**message, "headers": [*message.get("headers", []), *headers]}
        await send(message)

    return sender


def _binding_event_id(send: Send, bindings: SessionBindings, caller: Caller) -> Send:
    """Hold back the `{"event_id": ...}` answer until that id is bound to the caller."""
    held: list[Message] = []

    async def sender(message: Message) -> None:
        if message["type"] != "http.response.body":
            held.append(message)
            return
        held.append(message)
        if message.get("more_body", False):
            return
        body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
        try:
            event_id = json.loads(body).get("event_id")
        except (ValueError, AttributeError):
            event_id = None
        if isinstance(event_id, str):
            bindings.admit(event_id, caller)
        for m in held:
            await send(m)

    return sender
