"""Which HTTP client the OpenAI and Anthropic SDKs stream through.

Both SDKs ship an aiohttp-backed client (`DefaultAioHttpClient`, their `aiohttp` extra) beside the
default httpx2 one. Streaming, the difference is the cost of each network read: httpx2 reads through
anyio (a cancel scope per read) and parses HTTP/1.1 framing in Python (h11); aiohttp parses it in C.
With a reply arriving as one small chunk per token, that read is most of a stream's CPU: a burst of
100 streams cost about a quarter less server CPU per token on aiohttp (bench/README.md, "Issue 20").

The default httpx2 client is kept where aiohttp would behave differently: when a proxy is set in
the environment (the SDKs' aiohttp client does not pass proxies on, so requests would bypass it),
when aiohttp is not installed, and when PARLEY_HTTP_CLIENT=httpx asks for it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import Any

_PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")


def use_aiohttp(env: Mapping[str, str] | None = None) -> bool:
    """Whether SDK clients built now should stream through aiohttp (see the module docstring)."""
    env = os.environ if env is None else env
    if (env.get("PARLEY_HTTP_CLIENT") or "").strip().lower() == "httpx":
        return False
    if any((env.get(name) or env.get(name.lower()) or "").strip() for name in _PROXY_VARS):
        return False
    return importlib.util.find_spec("aiohttp") is not None


def sdk_http_client(sdk: Any, timeout: Any) -> dict[str, Any]:
    """Keyword arguments for the SDK client's constructor: its aiohttp client when `use_aiohttp()`, else none
    (the SDK builds its default httpx2 client). `sdk` is the imported `openai` or `anthropic` module."""
    if not use_aiohttp():
        return {}
    return {"http_client": sdk.DefaultAioHttpClient(timeout=timeout)}
