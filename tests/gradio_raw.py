"""Call any Gradio event by fn_index over raw HTTP, as the browser does (and as an attacker could)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx


class RawGradio:
    def __init__(self, url: str, auth: tuple[str, str] | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout, follow_redirects=True)
        if auth:
            r = self.http.post("/login", data={"username": auth[0], "password": auth[1]})
            r.raise_for_status()
        self.config = self.http.get("/config").json()
        self.session_hash = uuid.uuid4().hex[:12]
        self.components = {c["id"]: c for c in self.config["components"]}

    def close(self) -> None:
        self.http.close()

    def fn_index(self, api_name: str) -> int:
        """The index of the first event whose (auto) api_name is `api_name`."""
        for i, dep in enumerate(self.config["dependencies"]):
            if dep.get("api_name") == api_name:
                return dep.get("id", i)
        raise KeyError(api_name)

    def call(self, fn: int | str, data: list[Any]) -> dict[str, Any]:
        """Join the queue for one event and read its SSE stream to the end; returns the final message."""
        fn_index = self.fn_index(fn) if isinstance(fn, str) else fn
        r = self.http.post("/gradio_api/queue/join", json={
            "data": data, "fn_index": fn_index, "session_hash": self.session_hash,
            "event_data": None, "trigger_id": None,
        })
        r.raise_for_status()
        event_id = r.json()["event_id"]
        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.session_hash}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:].strip())
                if msg.get("event_id") not in (None, event_id):
                    continue
                if msg.get("msg") == "process_completed":
                    return msg
        raise RuntimeError("stream ended without process_completed")
