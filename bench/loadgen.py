"""Simulated users driving Gradio apps through the queue protocol, and the raw-SDK baseline.

Each user's turn has connections of its own, as each browser has: with one connection pool shared by
100 users, the pool itself made the users' second requests wait seconds before they were sent (httpx
traces of a burst: GET /queue/data called at 0.37 s, its headers written at 2.6 s, median), which the
burst rows had counted as the server's time. A turn is `POST /gradio_api/queue/join` then the session's SSE stream from `GET /gradio_api/queue/data`.
Time to first token is the first `process_generating` carrying the reply's first word; time to last
token is `process_completed`. Only lines that can matter are parsed, to keep the client's CPU low.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from tests.fakes.scenarios import default_tokens

# Loading the CA bundle costs milliseconds of this process's CPU per client: one context serves every user.
_SSL = ssl.create_default_context()

FIRST_WORD = default_tokens(1)[0].strip()  # "lorem0": the fake's default reply starts with it


def last_word(model: str) -> str:
    """The last word of the fake's default reply for a `rate-N-tokens-M` model."""
    tokens = int(model.rsplit("tokens-", 1)[1].split("-")[0])
    return default_tokens(tokens)[-1].strip()


@dataclass(slots=True)
class Result:
    ttft: float | None = None
    ttlt: float | None = None
    error: str | None = None
    messages: int = 0
    joined: float | None = None  # the join POST answered
    started: float | None = None  # process_starts: the queue handed the event to a worker
    streaming: float | None = None  # the queue/data stream's response headers arrived
    at: float = 0.0  # time.perf_counter() when the turn began (to line up with a server's own clock)


@dataclass
class LoadResult:
    results: list[Result]
    wall: float
    client_cpu: float  # this process's CPU seconds during the load
    extra: dict = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        return [r.error for r in self.results if r.error]

    def ttfts(self) -> list[float]:
        return sorted(r.ttft for r in self.results if r.ttft is not None)

    def ttlts(self) -> list[float]:
        return sorted(r.ttlt for r in self.results if r.ttlt is not None)

    @property
    def client_cpu_share(self) -> float:
        return self.client_cpu / self.wall if self.wall else 0.0


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of values; None when empty."""
    if not values:
        return None
    values = sorted(values)
    rank = max(1, -(-len(values) * q // 100))
    return values[int(rank) - 1]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def new_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=400),
        timeout=httpx.Timeout(600.0, connect=30.0),
    )


class GradioChat:
    """The `/chat` endpoint of a running Gradio app, driven over the queue protocol."""

    def __init__(self, client: httpx.AsyncClient, url: str, *, bare_model: bool = False):
        self.client, self.url = client, url  # `client` reads /config; each turn opens its own connections
        self.bare_model = bare_model  # the tutorial app takes "rate-..." where Parley takes "openai:rate-..."
        self.fn_index = -1
        self.template: list = []
        self.message_i = self.model_i = -1

    async def discover(self) -> GradioChat:
        """fn_index and input order of the dependency with api_name "chat", from /config."""
        config = (await self.client.get(f"{self.url}/config")).json()
        components = {c["id"]: c for c in config["components"]}
        chat_deps = [(i, dep) for i, dep in enumerate(config["dependencies"]) if dep.get("api_name") == "chat"]
        if not chat_deps:
            raise RuntimeError(f"{self.url}: no dependency with api_name 'chat'")
        i, dep = chat_deps[0]
        self.fn_index = dep.get("id", i)
        for j, target in enumerate(dep["inputs"]):
            comp = components[target]
            props = comp.get("props", {})
            self.template.append(None if comp["type"] == "state" else props.get("value"))
            if comp["type"] in ("textbox", "multimodaltextbox") and self.message_i < 0 and not props.get("label"):
                self.message_i = j
            if props.get("label") == "Model":
                self.model_i = j
        if self.message_i < 0 or self.model_i < 0:
            raise RuntimeError(f"{self.url}: could not find the message and Model inputs of /chat")
        return self

    async def turn(self, model: str, message: str = "hello", headers: dict[str, str] | None = None) -> Result:
        """One turn over connections of its own (see the module docstring); `headers` go on both requests (a load
        balancer must send the join and the stream to one replica)."""
        async with httpx.AsyncClient(verify=_SSL, timeout=httpx.Timeout(600.0, connect=30.0)) as client:
            return await self._turn(client, model, message, headers)

    async def _turn(self, client: httpx.AsyncClient, model: str, message: str, headers: dict[str, str] | None) -> Result:
        result = Result()
        done_marker = last_word(model)
        data = list(self.template)
        data[self.message_i] = message
        data[self.model_i] = model.split(":", 1)[-1] if self.bare_model else model
        session = uuid.uuid4().hex
        start = result.at = time.perf_counter()
        phase = "join"
        try:
            r = await client.post(f"{self.url}/gradio_api/queue/join",
                                       json={"data": data, "fn_index": self.fn_index, "session_hash": session}, headers=headers)
            result.joined = time.perf_counter() - start
            if r.status_code != 200:
                result.error = f"join {r.status_code}: {r.text[:200]}"
                return result
            phase = "data"
            async with client.stream("GET", f"{self.url}/gradio_api/queue/data", params={"session_hash": session},
                                          headers=headers) as s:
                result.streaming = time.perf_counter() - start
                async for line in s.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    result.messages += 1
                    if result.ttft is None and FIRST_WORD in line and '"process_generating"' in line:
                        result.ttft = time.perf_counter() - start
                    elif '"process_completed"' in line:
                        result.ttlt = time.perf_counter() - start
                        msg = json.loads(line[5:])
                        if not msg.get("success"):
                            result.error = f"failed: {json.dumps(msg.get('output'))[:300]}"
                        elif done_marker not in line:
                            result.error = "completed without the last token"
                        if result.ttft is None:  # the whole reply came in one message
                            result.ttft = result.ttlt
                    elif result.started is None and '"process_starts"' in line:
                        result.started = time.perf_counter() - start
                    elif '"close_stream"' in line:
                        break
                    elif '"unexpected_error"' in line or '"queue_full"' in line:
                        result.error = line[5:300]
                        break
            if result.ttlt is None and result.error is None:
                result.error = "stream ended without process_completed"
        except (httpx.HTTPError, OSError) as e:
            result.error = f"{phase} (after {result.messages} messages, {time.perf_counter() - start:.1f} s): {type(e).__name__}: {e}"
        return result


class RawSDK:
    """The limit: AsyncOpenAI streaming straight from the fake server."""

    def __init__(self, base_url: str):
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(base_url=base_url, api_key="test-key", max_retries=0, timeout=600.0)

    async def turn(self, model: str, message: str = "hello", *, headers: dict[str, str] | None = None) -> Result:
        """One user's turn over connections of its own (see the module docstring); `headers` go on both requests."""
        async with httpx.AsyncClient(verify=_SSL, headers=headers, timeout=httpx.Timeout(600.0, connect=30.0)) as client:
            return await self._turn(client, model, message)

    async def _turn(self, client: httpx.AsyncClient, model: str, message: str) -> Result:
        result = Result()
        start = time.perf_counter()
        text = []
        try:
            model_id = model.split(":", 1)[1] if ":" in model else model
            stream = await self.client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": message}], stream=True)
            async for chunk in stream:
                result.messages += 1
                if chunk.choices and chunk.choices[0].delta.content:
                    if result.ttft is None:
                        result.ttft = time.perf_counter() - start
                    text.append(chunk.choices[0].delta.content)
            result.ttlt = time.perf_counter() - start
            if last_word(model) not in "".join(text[-3:]):
                result.error = "stream ended without the last token"
        except Exception as e:  # noqa: BLE001 - a benchmark reports every failure as a row
            result.error = f"{type(e).__name__}: {e}"
        return result

    async def close(self) -> None:
        await self.client.close()


async def load(turn: Callable[[], Awaitable[Result]], users: int, spread: float = 0.0) -> LoadResult:
    """`users` turns, arriving evenly over `spread` seconds (0: all at once)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    cpu0, wall0 = time.process_time(), time.perf_counter()

    async def one(i: int) -> Result:
        delay = t0 + (spread * i / users if spread else 0.0) - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        return await turn()

    results = await asyncio.gather(*(one(i) for i in range(users)))
    return LoadResult(list(results), time.perf_counter() - wall0 - 0.05, time.process_time() - cpu0)
