"""A 10 MB image upload's effect on other users' time to first token (issue 14).

While `users` others arrive over `spread` seconds and stream from the fake provider, one more client uploads
a 10 MB image (`POST /gradio_api/upload`, as the browser's box does) and sends it with a message to a model
that reads images (the fake Anthropic endpoint: the image is decoded, re-encoded without metadata, scaled to
1568 px and base64-encoded into the request, as for a real user). The same load runs without the upload in
the same round, the order alternating between rounds so that drift hits both alike; the row is the others'
pooled p95 with the upload minus the p95 without it.

Each round sends a different image (new random pixels): the scaling memo and the per-owner deduplication
would otherwise make every round after the first cheaper than a real upload.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from bench.loadgen import GradioChat, LoadResult, Result, load, pct

#: A model the fake serves that Parley knows reads images (every Claude 3 and later model does).
VISION_MODEL = "anthropic:claude-sonnet-4-6"
IMAGE_BYTES = 10 * 1024 * 1024


def noise_png(size: int = IMAGE_BYTES) -> bytes:
    """A PNG of random pixels just over `size` bytes (noise does not compress: bytes ≈ 3 × pixels)."""
    from PIL import Image

    side = int((size / 3) ** 0.5) + 2
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


@dataclass
class Upload:
    """One upload-and-send: when each step ended (seconds from its start) and how it went."""

    upload: float | None = None  # the upload POST answered
    first_token: float | None = None  # its own reply's first streamed update
    done: float | None = None  # its own reply completed
    error: str | None = None


async def upload_and_send(client: httpx.AsyncClient, chat: GradioChat, data: bytes, name: str = "photo.png") -> Upload:
    """Upload `data` as the box does, then send it with a message to VISION_MODEL through the queue."""
    out = Upload()
    start = time.perf_counter()
    try:
        r = await client.post(f"{chat.url}/gradio_api/upload", params={"upload_id": uuid.uuid4().hex},
                              files=[("files", (name, data, "image/png"))])
        out.upload = time.perf_counter() - start
        if r.status_code != 200:
            out.error = f"upload {r.status_code}: {r.text[:200]}"
            return out
        path = r.json()[0]
        payload = list(chat.template)
        payload[chat.message_i] = {"text": "What is in this picture?", "files": [{
            "path": path, "orig_name": name, "size": len(data), "mime_type": "image/png",
            "meta": {"_type": "gradio.FileData"}}]}
        payload[chat.model_i] = VISION_MODEL
        session = uuid.uuid4().hex
        r = await client.post(f"{chat.url}/gradio_api/queue/join",
                              json={"data": payload, "fn_index": chat.fn_index, "session_hash": session})
        if r.status_code != 200:
            out.error = f"join {r.status_code}: {r.text[:200]}"
            return out
        async with client.stream("GET", f"{chat.url}/gradio_api/queue/data", params={"session_hash": session}) as s:
            async for line in s.aiter_lines():
                if not line.startswith("data:"):
                    continue
                if out.first_token is None and '"process_generating"' in line:
                    out.first_token = time.perf_counter() - start
                if '"process_completed"' in line:
                    out.done = time.perf_counter() - start
                    msg = json.loads(line[5:])
                    text = json.dumps(msg.get("output"))
                    if not msg.get("success"):
                        out.error = f"failed: {text[:300]}"
                    elif "⚠️" in text or "not sent" in text.lower():
                        out.error = f"refused or failed: {text[-300:]}"
                    break
        if out.done is None and out.error is None:
            out.error = "stream ended without process_completed"
    except (httpx.HTTPError, OSError, ValueError, IndexError) as e:
        out.error = f"{type(e).__name__}: {e}"
    return out


@dataclass
class Round:
    without: LoadResult
    with_upload: LoadResult
    upload: Upload


async def one_round(client: httpx.AsyncClient, chat: GradioChat, others: Callable[[], Awaitable[Result]],
                    users: int, spread: float, image: bytes, upload_first: bool, delay: float = 0.2) -> Round:
    """The others' load alone and with the upload starting `delay` s into the arrivals (order by `upload_first`)."""

    async def with_upload() -> tuple[LoadResult, Upload]:
        async def later() -> Upload:
            await asyncio.sleep(delay)
            return await upload_and_send(client, chat, image)

        lr, up = await asyncio.gather(load(others, users, spread), later())
        return lr, up

    if upload_first:
        loaded, up = await with_upload()
        alone = await load(others, users, spread)
    else:
        alone = await load(others, users, spread)
        loaded, up = await with_upload()
    return Round(alone, loaded, up)


def pooled_p95(loads: list[LoadResult]) -> float | None:
    return pct(sorted(t for lr in loads for t in lr.ttfts()), 95)


@dataclass
class Summary:
    p95_without: float | None
    p95_with: float | None
    errors: int  # the others' failed turns, both conditions
    upload_errors: list[str]
    notes: list[str]

    @property
    def added(self) -> float | None:
        return None if self.p95_with is None or self.p95_without is None else self.p95_with - self.p95_without


async def measure(client: httpx.AsyncClient, chat: GradioChat, others: Callable[[], Awaitable[Result]],
                  users: int, spread: float, runs: int) -> Summary:
    """`runs` rounds (a new image each), the conditions alternating in order; p95s pooled over the rounds."""
    rounds: list[Round] = []
    notes: list[str] = []
    for i in range(runs):
        image = await asyncio.to_thread(noise_png)  # made before the round: none of its CPU lands in it
        r = await one_round(client, chat, others, users, spread, image, upload_first=i % 2 == 1)
        rounds.append(r)
        up = r.upload
        notes.append(
            f"upload round {i + 1} ({len(image) / 2**20:.1f} MB PNG, {'upload first' if i % 2 else 'baseline first'}): "
            f"others' TTFT p95 without {_s(pct(r.without.ttfts(), 95))}, with {_s(pct(r.with_upload.ttfts(), 95))} "
            f"(max {_s(pct(r.without.ttfts(), 100))} / {_s(pct(r.with_upload.ttfts(), 100))}); errors "
            f"{len(r.without.errors)} / {len(r.with_upload.errors)}; the upload answered in {_s(up.upload)}, its reply's "
            f"first update at {_s(up.first_token)}, done at {_s(up.done)}" + (f"; upload error: {up.error}" if up.error else ""))
    return Summary(
        p95_without=pooled_p95([r.without for r in rounds]), p95_with=pooled_p95([r.with_upload for r in rounds]),
        errors=sum(len(r.without.errors) + len(r.with_upload.errors) for r in rounds),
        upload_errors=[r.upload.error for r in rounds if r.upload.error], notes=notes,
    )


def _s(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 1000:.0f} ms"
