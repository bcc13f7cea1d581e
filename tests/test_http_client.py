"""Which HTTP client each SDK streams through (chat/providers/_http.py): aiohttp for OpenAI and Anthropic unless a
proxy is set or PARLEY_HTTP_CLIENT=httpx; always httpx2 for Gemini, whose SDK would switch to aiohttp on its own."""

from __future__ import annotations

import pytest

from chat.providers._http import use_aiohttp
from chat.providers.anthropic import AnthropicProvider
from chat.providers.gemini import GeminiProvider
from chat.providers.openai import OpenAIProvider
from chat.types import Message, Params, TextDelta
from tests.fakes import FakeServer, default_tokens


@pytest.fixture(scope="module")
def srv():
    with FakeServer(api_key="test-key") as server:
        yield server


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, True),
        ({"PARLEY_HTTP_CLIENT": "httpx"}, False),
        ({"PARLEY_HTTP_CLIENT": " HTTPX "}, False),
        ({"PARLEY_HTTP_CLIENT": "aiohttp"}, True),
        ({"HTTPS_PROXY": "http://proxy.example:3128"}, False),
        ({"http_proxy": "http://proxy.example:3128"}, False),
        ({"ALL_PROXY": "socks5://proxy.example:1080"}, False),
        ({"HTTPS_PROXY": "  "}, True),
    ],
)
def test_aiohttp_unless_a_proxy_or_asked_not_to(env, expected):
    assert use_aiohttp(env) is expected


def _http_client(provider) -> object:
    return provider._client.get()._client  # the SDK client's own HTTP client


def _providers(srv: FakeServer):
    return [OpenAIProvider(api_key="test-key", base_url=srv.openai_base_url),
            AnthropicProvider(api_key="test-key", base_url=f"{srv.url}/anthropic", prompt_cache=False)]


def test_openai_and_anthropic_stream_through_aiohttp(srv, monkeypatch):
    for name in ("PARLEY_HTTP_CLIENT", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for provider in _providers(srv):
        assert "Aiohttp" in type(_http_client(provider)).__mro__[1].__name__, type(_http_client(provider)).__mro__


def test_a_proxy_in_the_environment_keeps_the_sdks_own_client(srv, monkeypatch):
    # The SDKs' aiohttp client does not pass a proxy on: with one set, requests would go around it.
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    for provider in _providers(srv):
        client = _http_client(provider)
        assert not any("Aiohttp" in cls.__name__ for cls in type(client).__mro__), type(client).__mro__
        assert client._mounts, "httpx2 mounted no proxy transport from the environment"


def test_gemini_keeps_httpx2_although_aiohttp_is_installed(srv):
    provider = GeminiProvider(api_key="test-key", base_url=f"{srv.url}/gemini")
    api_client = provider._client.get().aio._api_client
    assert api_client._use_aiohttp() is False


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_reply_streams_through_aiohttp(srv, kind):
    provider = _providers(srv)[0 if kind == "openai" else 1]
    model = "rate-2000-tokens-50"
    text = []
    async for event in provider.stream(model, [Message(role="user", content="hi")], Params()):
        if isinstance(event, TextDelta):
            text.append(event.text)
    assert "".join(text) == "".join(default_tokens(50))
    await provider._client.aclose()
