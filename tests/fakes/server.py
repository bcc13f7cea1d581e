"""FakeServer: OpenAI, Anthropic and Gemini fakes on one local port (asyncio, hand-written HTTP/1.1, stdlib only)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl, unquote

from . import wire
from .prompt_cache import CachingAnthropicWire, PromptCache, TooManyBreakpoints
from .scenarios import Scenario, builtin_model_names, builtin_scenario, default_tokens, split_tokens

_MAX_HEADER = 64 * 1024


@dataclass
class RecordedRequest:
    """One request the server received (recorded before any check, so failed ones are here too)."""

    provider: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    model: str | None
    request_id: str | None = None  # the id the fake answered with (OpenAI's x-request-id header)


@dataclass
class StreamRecord:
    """What happened to one streamed response."""

    provider: str
    model: str
    tokens_sent: int = 0
    completed: bool = False  # the server finished the body (chunked terminator written)
    client_closed: bool = False  # the client closed the socket before the server finished
    dropped: bool = False  # the server closed the socket on purpose (drop_after)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None


class _ClientGone(Exception):
    """The peer closed the connection."""


class _Stopping(Exception):
    """The server is shutting down."""


class _Request:
    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.target = target
        path, _, qs = target.partition("?")
        self.path = unquote(path)
        self.query = dict(parse_qsl(qs, keep_blank_values=True))
        self.headers = headers
        self.body = body
        self._json: Any = None
        self._json_done = False

    @property
    def json(self) -> Any:
        if not self._json_done:
            self._json_done = True
            try:
                self._json = json.loads(self.body) if self.body else None
            except ValueError:
                self._json = None
        return self._json


class _Conn:
    """One client connection: request parsing, plain and chunked responses, client-close detection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buf = bytearray()
        self.gone = asyncio.Event()
        self._monitor: asyncio.Task[None] | None = None

    async def _fill(self) -> bool:
        try:
            data = await self.reader.read(65536)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.gone.set()
            return False
        self.buf += data
        return True

    async def read_request(self) -> _Request | None:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buf) > _MAX_HEADER or not await self._fill():
                return None
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[: end + 4]
        lines = head.split("\r\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            return None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        while len(self.buf) < length:
            if not await self._fill():
                return None
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return _Request(method, target, headers, body)

    # Watching for EOF while a response streams: the client sends nothing then, so any EOF means it hung up.
    def start_monitor(self) -> None:
        async def watch() -> None:
            while await self._fill():
                pass

        self._monitor = asyncio.ensure_future(watch())

    async def stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._monitor
            self._monitor = None

    async def write(self, data: bytes) -> None:
        if self.gone.is_set() or self.writer.transport.is_closing():
            self.gone.set()
            raise _ClientGone
        self.writer.write(data)
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as e:
            self.gone.set()
            raise _ClientGone from e

    @staticmethod
    def _head(status: int, headers: dict[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {wire.reason_phrase(status)}",
                 f"Date: {formatdate(usegmt=True)}", "Server: parley-fake"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        headers = {**headers, "Content-Length": str(len(body))}
        await self.write(self._head(status, headers) + body)

    async def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None,
                        indent: int | None = None) -> None:
        body = json.dumps(obj, indent=indent).encode() + (b"\n" if indent else b"")
        await self.send(status, {"Content-Type": "application/json; charset=UTF-8", **(headers or {})}, body)

    async def start_chunked(self, status: int, headers: dict[str, str]) -> None:
        await self.write(self._head(status, {**headers, "Transfer-Encoding": "chunked"}))

    async def send_chunks(self, events: list[bytes], final: bool = False) -> None:
        """Write each event as its own HTTP chunk, all in one socket write; `final` adds the terminator."""
        out = bytearray()
        for ev in events:
            if ev:
                out += b"%x\r\n" % len(ev) + ev + b"\r\n"
        if final:
            out += b"0\r\n\r\n"
        if out:
            await self.write(bytes(out))

    def abort(self) -> None:
        self.writer.transport.close()


_GEMINI_RE = re.compile(r"/(v1|v1beta|v1alpha)/models(?:/([^:]+?)(?::(\w+))?)?/?")


class FakeServer:
    """Local OpenAI / Anthropic / Gemini fake; see tests/fakes/README.md."""

    def __init__(self, api_key: str | None = "test-key", host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self._scenarios: dict[str, Scenario] = {}
        self._counters: dict[str, int] = {}
        self._prompt_cache = PromptCache()  # Anthropic's prompt cache (tests/fakes/prompt_cache.py)
        self._requests: list[RecordedRequest] = []
        self._streams: list[StreamRecord] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._stopping: asyncio.Event | None = None
        self._conn_tasks: set[asyncio.Task[Any]] = set()
        self.connections_accepted = 0  # TCP connections taken (clients that reuse theirs keep it low)

    # ------------------------------------------------------------------ public API

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/openai/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"{self.url}/anthropic"

    @property
    def gemini_base_url(self) -> str:
        return f"{self.url}/gemini"

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self._requests)

    @property
    def stream_log(self) -> list[StreamRecord]:
        return list(self._streams)

    def set_scenario(self, model: str, scenario: Scenario) -> None:
        """Serve `scenario` for requests naming `model` (any provider); resets its failure counter."""
        self._scenarios[model] = scenario
        self._counters.pop(model, None)

    def clear(self) -> None:
        """Forget recorded requests, stream records and per-model failure counters."""
        self._requests.clear()
        self._streams.clear()
        self._counters.clear()
        self._prompt_cache.clear()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Poll until predicate() is truthy and return its value; raise TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(0.005)

    def start(self) -> FakeServer:
        """Listen in a daemon thread running its own event loop; returns when the port is bound."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as e:  # noqa: BLE001 - handed to the starting thread
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"FakeServer:{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close the listener and every open connection (stalled streams end at once)."""
        if self._thread is None or self._loop is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ server plumbing

    async def _listen(self) -> None:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._on_client, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._stopping is not None and self._server is not None
        self._stopping.set()
        self._server.close()
        await asyncio.sleep(0.05)  # let stalled streams notice and end cleanly
        for task in list(self._conn_tasks):
            task.cancel()
        if self._conn_tasks:
            await asyncio.gather(*self._conn_tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conn_tasks.add(task)
        self.connections_accepted += 1
        conn = _Conn(reader, writer)
        try:
            while self._stopping is not None and not self._stopping.is_set():
                req = await conn.read_request()
                if req is None:
                    break
                keep = await self._dispatch(conn, req)
                if not keep or req.headers.get("connection", "").lower() == "close":
                    break
        except (_ClientGone, _Stopping, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            await conn.stop_monitor()
            with contextlib.suppress(Exception):
                writer.close()
            self._conn_tasks.discard(task)

    # ------------------------------------------------------------------ routing

    async def _dispatch(self, conn: _Conn, req: _Request) -> bool:
        """Answer one request; return False to close the connection afterwards."""
        path = req.path
        if path.startswith("/_fake/"):
            await self._control(conn, req)
            return True
        for prefix in ("openai", "anthropic", "gemini"):
            if path.startswith(f"/{prefix}/"):
                return await getattr(self, f"_{prefix}")(conn, req, path[len(prefix) + 1 :])
        await conn.send_json(404, {"error": {"message": f"no fake at {path}", "type": "not_found"}})
        return True

    def _record(self, provider: str, req: _Request, model: str | None) -> None:
        self._requests.append(RecordedRequest(provider, req.method, req.path, req.query, dict(req.headers),
                                              req.json, model))

    def _scenario(self, model: str) -> Scenario | None:
        return self._scenarios.get(model) or builtin_scenario(model)

    def _model_names(self) -> list[str]:
        names = builtin_model_names()
        return names + [m for m in self._scenarios if m not in names]

    def _key_ok(self, key: str | None) -> bool:
        return self.api_key is None or key == self.api_key

    @staticmethod
    def _bearer(req: _Request) -> str | None:
        auth = req.headers.get("authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else None

    def _failure(self, model: str, sc: Scenario) -> bool:
        """Count a generation request for `model`; True while it should still fail."""
        n = self._counters.get(model, 0) + 1
        self._counters[model] = n
        return sc.fail_status is not None and n <= sc.fail_times

    @staticmethod
    def _retry_headers(sc: Scenario) -> dict[str, str]:
        if sc.retry_after is None:
            return {}
        ra = sc.retry_after
        return {"retry-after": str(int(ra)) if float(ra).is_integer() else f"{ra:g}",
                "retry-after-ms": str(int(ra * 1000))}

    # ------------------------------------------------------------------ OpenAI

    async def _openai(self, conn: _Conn, req: _Request, rest: str) -> bool:
        body = req.json if isinstance(req.json, dict) else {}
        model = body.get("model") if rest in ("/v1/chat/completions", "/v1/responses") else None
        self._record("openai", req, model)
        rid = wire.new_id("req_", 16)
        self._requests[-1].request_id = rid
        hdrs = {"x-request-id": rid, "openai-version": "2020-10-01", "openai-processing-ms": "1"}
        if not self._key_ok(self._bearer(req)):
            key = self._bearer(req) or ""
            msg = (f"Incorrect API key provided: {key[:2]}***{key[-2:]}. You can find your API key at "
                   "https://platform.openai.com/account/api-keys.") if key else (
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
            await conn.send_json(401, wire.openai_error(401, msg), hdrs)
            return True
        if req.method == "GET" and rest.rstrip("/") == "/v1/models":
            await conn.send_json(200, wire.openai_models(self._model_names()), hdrs)
            return True
        if req.method == "GET" and rest.startswith("/v1/models/"):
            name = rest[len("/v1/models/") :]
            if self._scenario(name) is None:
                await conn.send_json(404, wire.openai_error(
                    404, f"The model `{name}` does not exist or you do not have access to it."), hdrs)
            else:
                await conn.send_json(200, wire.openai_models([name])["data"][0], hdrs)
            return True
        if req.method == "POST" and rest == "/v1/moderations":
            if not await self._moderation_knobs(conn, body.get("model") or "omni-moderation-latest", hdrs):
                return True
            inp = body.get("input", "")
            items = inp if isinstance(inp, list) else [inp]
            texts = [i if isinstance(i, str) else str(i.get("text", "")) if isinstance(i, dict) else str(i)
                     for i in items]
            await conn.send_json(200, wire.moderation(body.get("model") or "omni-moderation-latest", texts), hdrs)
            return True
        if req.method != "POST" or rest not in ("/v1/chat/completions", "/v1/responses"):
            await conn.send_json(404, wire.openai_error(404, f"Invalid URL ({req.method} /v1{rest[3:]})",
                                                        code=None), hdrs)
            return True
        if not isinstance(model, str) or (sc := self._scenario(model)) is None:
            await conn.send_json(404, wire.openai_error(
                404, f"The model `{model}` does not exist or you do not have access to it."), hdrs)
            return True
        if self._failure(model, sc):
            assert sc.fail_status is not None
            await conn.send_json(sc.fail_status, wire.openai_error(sc.fail_status, etype=sc.fail_type),
                                 {**hdrs, **self._retry_headers(sc)})
            return True
        if rest == "/v1/responses":
            if sc.unverified_org and "summary" in (body.get("reasoning") or {}):
                await conn.send_json(400, wire.openai_error(
                    400, "Your organization must be verified to generate reasoning summaries. Please go to: "
                         "https://platform.openai.com/settings/organization/general and click on Verify Organization. "
                         "If you just verified, it can take up to 15 minutes for access to propagate.",
                    code="unsupported_value", param="reasoning.summary"), hdrs)
                return True
            if (refusal := _responses_input_error(body)) is not None:
                await conn.send_json(400, wire.openai_error(400, refusal, param="input"), hdrs)
                return True
            sc = sc.after_tool_rounds(_tool_rounds("openai_responses", body))
        else:
            sc = sc.after_tool_rounds(_tool_rounds("openai", body))
        if sc.prompt_blocked:
            await conn.send_json(400, wire.openai_error(
                400, "The response was filtered due to the prompt triggering content management policy. "
                     "Please modify your prompt and retry.", code="content_filter", param="prompt"), hdrs)
            return True
        if rest == "/v1/responses":
            texts = [("system", body["instructions"])] if isinstance(body.get("instructions"), str) else []
            texts += _responses_texts(body.get("input"))
            rw = wire.OpenAIResponsesWire(model, _count_prompt(texts), body)
            if not body.get("stream"):
                return await self._unary(conn, rw, sc, texts, hdrs)
            return await self._stream(conn, rw, sc, texts, hdrs)
        messages = body.get("messages") or []
        texts = [(m.get("role", ""), _content_text(m.get("content"))) for m in messages if isinstance(m, dict)]
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        w = wire.OpenAIWire(model, include_usage)
        if not body.get("stream"):
            return await self._unary(conn, w, sc, texts, hdrs)
        return await self._stream(conn, w, sc, texts, hdrs)

    async def _moderation_knobs(self, conn: _Conn, model: str, hdrs: dict[str, str]) -> bool:
        """A scenario named after the moderation model may delay it (`delay`) or fail it (`fail_*`); False when answered."""
        sc = self._scenarios.get(model)
        if sc is None:
            return True
        if sc.delay > 0:
            await asyncio.sleep(sc.delay)
        if self._failure(model, sc):
            assert sc.fail_status is not None
            await conn.send_json(sc.fail_status, wire.openai_error(sc.fail_status, etype=sc.fail_type),
                                 {**hdrs, **self._retry_headers(sc)})
            return False
        return True

    # ------------------------------------------------------------------ Anthropic

    async def _anthropic(self, conn: _Conn, req: _Request, rest: str) -> bool:
        body = req.json if isinstance(req.json, dict) else {}
        model = body.get("model") if rest == "/v1/messages" else None
        self._record("anthropic", req, model)
        rid = wire.new_id("req_", 12)
        hdrs = {"request-id": rid, "anthropic-organization-id": "00000000-0000-0000-0000-000000000000"}
        key = req.headers.get("x-api-key") or self._bearer(req)
        if not self._key_ok(key):
            msg = "invalid x-api-key" if key else "x-api-key header is required"
            await conn.send_json(401, wire.anthropic_error(401, msg, request_id=rid), hdrs)
            return True
        if req.method == "GET" and rest.rstrip("/") == "/v1/models":
            await conn.send_json(200, wire.anthropic_models(self._model_names()), hdrs)
            return True
        if req.method == "GET" and rest.startswith("/v1/models/"):
            name = rest[len("/v1/models/") :]
            if self._scenario(name) is None:
                await conn.send_json(404, wire.anthropic_error(404, f"model: {name}", request_id=rid), hdrs)
            else:
                await conn.send_json(200, wire.anthropic_models([name])["data"][0], hdrs)
            return True
        if req.method != "POST" or rest != "/v1/messages":
            await conn.send_json(404, wire.anthropic_error(404, "Not Found", request_id=rid), hdrs)
            return True
        if not isinstance(model, str) or (sc := self._scenario(model)) is None:
            await conn.send_json(404, wire.anthropic_error(404, f"model: {model}", request_id=rid), hdrs)
            return True
        if self._failure(model, sc):
            assert sc.fail_status is not None
            await conn.send_json(sc.fail_status, wire.anthropic_error(sc.fail_status, etype=sc.fail_type,
                                                                      request_id=rid),
                                 {**hdrs, **self._retry_headers(sc)})
            return True
        sc = sc.after_tool_rounds(_tool_rounds("anthropic", body))
        texts = [("system", _content_text(body.get("system")))] if body.get("system") else []
        texts += [(m.get("role", ""), _content_text(m.get("content")))
                  for m in body.get("messages") or [] if isinstance(m, dict)]
        try:
            use = self._prompt_cache.use(key or "", body, sc.cache_min_tokens)
        except TooManyBreakpoints as e:
            await conn.send_json(400, wire.anthropic_error(400, str(e), request_id=rid), hdrs)
            return True
        w = CachingAnthropicWire(model, _count_prompt(texts), use)
        if not body.get("stream"):
            return await self._unary(conn, w, sc, texts, hdrs)
        return await self._stream(conn, w, sc, texts, hdrs)

    # ------------------------------------------------------------------ Gemini

    async def _gemini(self, conn: _Conn, req: _Request, rest: str) -> bool:
        m = _GEMINI_RE.fullmatch(rest)
        version, model, method = (m[1], m[2], m[3]) if m else (None, None, None)
        if model and model.startswith("models/"):
            model = model[len("models/") :]
        self._record("gemini", req, model)
        hdrs: dict[str, str] = {"Vary": "Origin, X-Origin, Referer", "X-Content-Type-Options": "nosniff"}
        key = req.headers.get("x-goog-api-key") or req.query.get("key")
        if not self._key_ok(key):
            await conn.send_json(400, wire.gemini_bad_key(key or ""), hdrs, indent=2)
            return True
        if m is None:
            await conn.send_json(404, wire.gemini_error(404, f"Method not found: {req.path}"), hdrs, indent=2)
            return True
        assert version is not None
        if req.method == "GET" and model is None:
            await conn.send_json(200, wire.gemini_models(self._model_names()), hdrs, indent=2)
            return True
        assert model is not None
        sc = self._scenario(model)
        if req.method == "GET" and method is None:
            if sc is None:
                await conn.send_json(404, wire.gemini_error(404, f"models/{model} is not found for API version "
                                                                 f"{version}"), hdrs, indent=2)
            else:
                await conn.send_json(200, wire.gemini_model(model), hdrs, indent=2)
            return True
        if req.method != "POST" or method not in ("streamGenerateContent", "generateContent"):
            await conn.send_json(404, wire.gemini_error(404, f"Method not found: {method}"), hdrs, indent=2)
            return True
        if sc is None:
            await conn.send_json(404, wire.gemini_unknown_model(model, version, "generateContent"), hdrs, indent=2)
            return True
        if self._failure(model, sc):
            assert sc.fail_status is not None
            gstatus = sc.fail_type if sc.fail_type and sc.fail_type.isupper() else None
            await conn.send_json(sc.fail_status, wire.gemini_error(sc.fail_status, gstatus=gstatus),
                                 {**hdrs, **self._retry_headers(sc)}, indent=2)
            return True
        body = req.json if isinstance(req.json, dict) else {}
        sc = sc.after_tool_rounds(_tool_rounds("gemini", body))
        texts = []
        if isinstance(body.get("systemInstruction"), dict):
            texts.append(("system", _parts_text(body["systemInstruction"].get("parts"))))
        texts += [(c.get("role", "user"), _parts_text(c.get("parts")))
                  for c in body.get("contents") or [] if isinstance(c, dict)]
        w = wire.GeminiWire(model, _count_prompt(texts))
        if method == "generateContent":
            return await self._unary(conn, w, sc, texts, hdrs)
        return await self._stream(conn, w, sc, texts, hdrs)

    # ------------------------------------------------------------------ generation

    @staticmethod
    def _reply_tokens(sc: Scenario, texts: list[tuple[str, str]]) -> list[str]:
        if sc.echo:
            last = next((t for role, t in reversed(texts) if role == "user"), "")
            return split_tokens(f"You said: {last}")
        if sc.text is not None:
            return split_tokens(sc.text)
        if sc.tool_calls:
            return []
        return default_tokens(sc.tokens)

    async def _unary(self, conn: _Conn, w: Any, sc: Scenario, texts: list[tuple[str, str]],
                     hdrs: dict[str, str]) -> bool:
        tokens = self._reply_tokens(sc, texts)
        reasoning = split_tokens(sc.reasoning or "") if w.supports_reasoning else []
        calls = sc.tool_calls or []
        usage = wire.Usage(_count_prompt(texts), len(tokens), len(reasoning))
        if sc.prompt_blocked and isinstance(w, wire.GeminiWire):
            obj: Any = json.loads(w.blocked(usage)[0][6:])
        else:
            reason = ("refusal" if sc.prompt_blocked else None) or sc.finish_for(w.provider) or \
                w.default_finish(bool(calls))
            text = "" if sc.prompt_blocked else "".join(tokens)
            if isinstance(w, (wire.OpenAIWire, wire.OpenAIResponsesWire)):
                obj = w.unary(text, calls, reason, usage)
            else:
                obj = w.unary(text, "".join(reasoning), calls, reason, usage)
        await conn.send_json(200, obj, hdrs)
        return True

    async def _stream(self, conn: _Conn, w: Any, sc: Scenario, texts: list[tuple[str, str]],
                      hdrs: dict[str, str]) -> bool:
        """Stream one reply; returns False when the connection must not be reused."""
        assert self._stopping is not None
        rec = StreamRecord(w.provider, w.model)
        self._streams.append(rec)
        loop = asyncio.get_running_loop()
        conn.start_monitor()
        try:
            await conn.start_chunked(200, {"Content-Type": w.content_type, "Cache-Control": "no-cache",
                                           "Connection": "keep-alive", **hdrs})
            if sc.replay:
                await self._replay(conn, sc, rec)
                return True
            if sc.prompt_blocked:
                await conn.send_chunks(w.blocked(wire.Usage(_count_prompt(texts))), final=True)
                rec.completed = True
                return True

            tokens = self._reply_tokens(sc, texts)
            reasoning = split_tokens(sc.reasoning or "") if w.supports_reasoning else []
            step = max(1, sc.chunk_tokens)
            rate = sc.rate
            next_t = loop.time()
            burst = 0

            async def pace(n: int) -> None:
                nonlocal next_t, burst
                if conn.gone.is_set():
                    raise _ClientGone
                if rate > 0:
                    next_t += n / rate
                    delay = next_t - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    burst += 1
                    if burst % 32 == 0:  # let other connections run during an unthrottled stream
                        await asyncio.sleep(0)

            await conn.send_chunks(w.head())
            for i in range(0, len(reasoning), step):
                await pace(len(reasoning[i : i + step]))
                await conn.send_chunks(w.reasoning("".join(reasoning[i : i + step])))
            await conn.send_chunks(w.reasoning_end())

            total = len(tokens)
            faults = sorted(
                (min(n, total), kind)
                for kind, n in (("stall", sc.stall_after), ("drop", sc.drop_after), ("error", sc.error_after),
                                ("truncate", sc.truncate_after))
                if n is not None
            )
            sent = 0
            while True:
                while faults and faults[0][0] <= sent:
                    _, kind = faults.pop(0)
                    if kind == "stall":
                        await self._stall(conn, sc.stall_seconds)
                        next_t = loop.time()
                    elif kind == "drop":
                        rec.dropped = True
                        conn.abort()
                        return False
                    elif kind == "error":
                        await conn.send_chunks(w.text_end() + w.error_event(sc.fail_type), final=True)
                        rec.completed = True
                        return True
                    else:  # truncate: clean end of body, no finish marker
                        await conn.send_chunks(w.text_end(), final=True)
                        rec.completed = True
                        return True
                if sent >= total:
                    break
                n = min(step, total - sent, *(f[0] - sent for f in faults))
                await pace(n)
                await conn.send_chunks(w.text("".join(tokens[sent : sent + n])))
                sent += n
                rec.tokens_sent = sent

            calls = sc.tool_calls or []
            final = w.text_end() + (w.tools(calls) if calls else [])
            reason = sc.finish_for(w.provider) or w.default_finish(bool(calls))
            usage = wire.Usage(_count_prompt(texts), total, len(reasoning))
            await conn.send_chunks(final + w.finish(reason, usage), final=True)
            rec.completed = True
            return True
        except _ClientGone:
            rec.client_closed = True
            return False
        except asyncio.CancelledError:
            if conn.gone.is_set():
                rec.client_closed = True
            raise
        finally:
            rec.ended = time.monotonic()
            await conn.stop_monitor()

    async def _stall(self, conn: _Conn, seconds: float) -> None:
        """Send nothing for `seconds`, ending early if the client hangs up or the server stops."""
        assert self._stopping is not None
        waiters = [asyncio.ensure_future(conn.gone.wait()), asyncio.ensure_future(self._stopping.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in waiters:
                t.cancel()
        if conn.gone.is_set():
            raise _ClientGone
        if self._stopping.is_set():
            raise _Stopping

    async def _replay(self, conn: _Conn, sc: Scenario, rec: StreamRecord) -> None:
        data = sc.replay_path().read_bytes()
        if sc.replay_fix_final_blank_line and not (data.endswith(b"\n\n") or data.endswith(b"\r\n\r\n")):
            nl = b"\r\n" if b"\r\n" in data else b"\n"
            data += nl if data.endswith(nl) else nl + nl
        events = [e for e in re.split(rb"(?<=\r\n\r\n)|(?<=\n\n)", data) if e]
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        for i, ev in enumerate(events):
            if conn.gone.is_set():
                raise _ClientGone
            if sc.rate > 0:
                next_t += 1 / sc.rate
                if (delay := next_t - loop.time()) > 0:
                    await asyncio.sleep(delay)
            await conn.send_chunks([ev], final=i == len(events) - 1)
            rec.tokens_sent = i + 1
        if not events:
            await conn.send_chunks([], final=True)
        rec.completed = True

    # ------------------------------------------------------------------ control endpoints (for a separate process)

    async def _control(self, conn: _Conn, req: _Request) -> None:
        path = req.path
        if path == "/_fake/health":
            await conn.send_json(200, {"ok": True, "url": self.url})
        elif path == "/_fake/requests":
            await conn.send_json(200, [dataclasses.asdict(r) for r in self._requests])
        elif path == "/_fake/stream_log":
            await conn.send_json(200, [dataclasses.asdict(r) for r in self._streams])
        elif path == "/_fake/clear" and req.method == "POST":
            self.clear()
            await conn.send_json(200, {"ok": True})
        elif path.startswith("/_fake/scenarios/") and req.method in ("POST", "PUT"):
            model = path[len("/_fake/scenarios/") :]
            try:
                self.set_scenario(model, Scenario.from_dict(req.json or {}))
            except TypeError as e:
                await conn.send_json(400, {"error": str(e)})
                return
            await conn.send_json(200, {"ok": True, "model": model})
        elif path.startswith("/_fake/scenarios/") and req.method == "DELETE":
            self._scenarios.pop(path[len("/_fake/scenarios/") :], None)
            await conn.send_json(200, {"ok": True})
        else:
            await conn.send_json(404, {"error": f"unknown control path {path}"})


def _content_text(content: Any) -> str:
    """Text of an OpenAI/Anthropic message content: a string or a list of parts/blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _parts_text(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    return " ".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


def _tool_rounds(provider: str, body: dict[str, Any]) -> int:
    """How many assistant messages in the request asked for tools (rounds of a tool loop so far)."""
    if provider == "gemini":
        return sum(
            1 for c in body.get("contents") or []
            if isinstance(c, dict) and c.get("role") == "model"
            and any(isinstance(p, dict) and ("functionCall" in p or "function_call" in p) for p in c.get("parts") or [])
        )
    if provider == "openai_responses":  # a run of function_call items is one round (parallel calls)
        kinds = [i.get("type") for i in body.get("input") or [] if isinstance(i, dict)] if isinstance(
            body.get("input"), list) else []
        starts = ("function_call", "reasoning")
        return sum(1 for i, k in enumerate(kinds) if k in starts and (i == 0 or kinds[i - 1] not in starts))
    rounds = 0
    for m in body.get("messages") or []:
        if not isinstance(m, dict) or m.get("role") != "assistant":
            continue
        content = m.get("content")
        if m.get("tool_calls") or (isinstance(content, list) and any(
                isinstance(b, dict) and b.get("type") == "tool_use" for b in content)):
            rounds += 1
    return rounds


def _responses_texts(items: Any) -> list[tuple[str, str]]:
    """(role, text) of a Responses `input`: a string, or messages and function_call_output items."""
    if isinstance(items, str):
        return [("user", items)]
    out: list[tuple[str, str]] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call_output":
            out.append(("tool", str(item.get("output") or "")))
        elif "role" in item:
            out.append((item["role"], _content_text(item.get("content"))))
    return out


def _responses_input_error(body: dict[str, Any]) -> str | None:
    """The API's refusal of a stateless input that cannot be continued, as the real one words it, else None:
    a reasoning item must come with its following item, and with `store` false it must carry its
    encrypted content (nothing is kept on the server to look it up by id)."""
    items = body.get("input") if isinstance(body.get("input"), list) else []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("type") != "reasoning":
            continue
        after = items[i + 1] if i + 1 < len(items) else None
        if not isinstance(after, dict) or after.get("type") not in ("function_call", "message", "reasoning") and \
                after.get("role") != "assistant":
            return f"Item '{item.get('id')}' of type 'reasoning' was provided without its required following item."
        if body.get("store") is False and not item.get("encrypted_content"):
            return (f"Item with id '{item.get('id')}' not found. Items are not persisted when `store` is set to "
                    "false. Try again with `store` set to true, or remove this item from your input.")
    return None


def _count_prompt(texts: list[tuple[str, str]]) -> int:
    """A rough prompt token count: words plus a few per message."""
    return max(1, sum(len(t.split()) + 3 for _, t in texts))
