"""Settings, models.toml endpoints, provider resolution and model listing."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from chat.errors import NotConfigured
from chat.providers.anthropic import AnthropicProvider
from chat.providers.base import Provider
from chat.providers.demo import DemoProvider
from chat.providers.gemini import GeminiProvider
from chat.providers.openai import OpenAIProvider
from chat.registry import DEMO_REF, LIST_TIMEOUT, Registry, Settings, load_dotenv_file
from chat.settings import read_endpoints
from chat.types import Finish, FinishReason, Message, ModelInfo, Params, StreamEvent, TextDelta, ToolSpec

REPO = Path(__file__).resolve().parent.parent

OLLAMA = """
[[endpoint]]
name = "ollama"
label = "Ollama (local)"
base_url = "http://localhost:11434/v1"
key_env = ""
models = ["llama3.2", "qwen2.5:7b"]
context_window = 8192
"""

GROQ = """
[[endpoint]]
name = "groq"
label = "Groq"
base_url = "https://api.groq.com/openai/v1"
key_env = "GROQ_API_KEY"
models = [{ id = "llama-3.3-70b-versatile", label = "Llama 3.3 70B", context_window = 131072 }]
effort = true
include_usage = false
"""


def settings(env: dict[str, str], tmp_path: Path, toml: str | None = None) -> Settings:
    if toml is not None:
        (tmp_path / "models.toml").write_text(toml)
    return Settings.from_env(env, cwd=tmp_path)


# -- settings -----------------------------------------------------------------------------------------


def test_nothing_configured_means_demo_only(tmp_path):
    reg = Registry.from_settings(settings({}, tmp_path))
    assert list(reg.providers) == ["demo"]
    assert reg.unconfigured() == [
        ("openai", "OpenAI", "set OPENAI_API_KEY"),
        ("anthropic", "Anthropic", "set ANTHROPIC_API_KEY"),
        ("gemini", "Google Gemini", "set GEMINI_API_KEY (or GOOGLE_API_KEY)"),
    ]
    assert reg.default_model == DEMO_REF == "demo:parley-demo"


def test_keys_and_base_urls_from_the_environment(tmp_path):
    env = {
        "OPENAI_API_KEY": "sk-1", "OPENAI_BASE_URL": "http://proxy.local/v1",
        "ANTHROPIC_API_KEY": "sk-ant", "ANTHROPIC_BASE_URL": "http://claude.local",
        "GOOGLE_API_KEY": "g-key", "GOOGLE_GEMINI_BASE_URL": "http://gemini.local",
        "DEFAULT_MODEL": "anthropic:claude-some-future-model",
    }
    s = settings(env, tmp_path)
    assert (s.openai_api_key, s.anthropic_api_key, s.gemini_api_key) == ("sk-1", "sk-ant", "g-key")
    assert s.gemini_key_var == "GOOGLE_API_KEY"
    reg = Registry.from_settings(s)
    assert set(reg.providers) == {"openai", "anthropic", "gemini", "demo"} and reg.unconfigured() == []
    assert isinstance(reg.providers["openai"], OpenAIProvider) and reg.providers["openai"].base_url == "http://proxy.local/v1"
    assert reg.providers["anthropic"].base_url == "http://claude.local"
    gemini = reg.providers["gemini"]
    assert isinstance(gemini, GeminiProvider) and gemini.base_url == "http://gemini.local"
    assert gemini.key_env_var == "GOOGLE_API_KEY"  # error messages name the variable actually used
    assert reg.default_model == "anthropic:claude-some-future-model"  # any model name is accepted


def test_gemini_api_key_wins_over_google_api_key(tmp_path):
    s = settings({"GEMINI_API_KEY": "a", "GOOGLE_API_KEY": "b"}, tmp_path)
    assert (s.gemini_api_key, s.gemini_key_var) == ("a", "GEMINI_API_KEY")


def test_blank_values_count_as_unset(tmp_path):
    reg = Registry.from_settings(settings({"OPENAI_API_KEY": "  ", "DEFAULT_MODEL": ""}, tmp_path))
    assert "openai" not in reg.providers and reg.default_model == DEMO_REF


def test_default_model_is_the_first_real_providers_first_model(tmp_path):
    reg = Registry.from_settings(settings({"ANTHROPIC_API_KEY": "k"}, tmp_path))
    assert reg.default_model == AnthropicProvider(api_key="k").curated()[0].ref


def test_unusable_default_model_falls_back(tmp_path):
    reg = Registry.from_settings(settings({"DEFAULT_MODEL": "openai:gpt-4o", "GEMINI_API_KEY": "k"}, tmp_path))
    assert reg.default_model == GeminiProvider(api_key="k").curated()[0].ref


def test_load_dotenv_file(tmp_path, monkeypatch):
    monkeypatch.delenv("PARLEY_TEST_DOTENV", raising=False)
    monkeypatch.setenv("PARLEY_TEST_KEPT", "from-env")
    (tmp_path / ".env").write_text("PARLEY_TEST_DOTENV=hello\nPARLEY_TEST_KEPT=from-file\n")
    try:
        assert load_dotenv_file(tmp_path / ".env") is True
        assert os.environ["PARLEY_TEST_DOTENV"] == "hello"
        assert os.environ["PARLEY_TEST_KEPT"] == "from-env"  # the real environment wins
    finally:
        os.environ.pop("PARLEY_TEST_DOTENV", None)
    assert load_dotenv_file(tmp_path / "missing.env") is False


# -- models.toml ----------------------------------------------------------------------------------------


def test_toml_endpoints(tmp_path):
    reg = Registry.from_settings(settings({"GROQ_API_KEY": "gsk"}, tmp_path, OLLAMA + GROQ))
    ollama, groq = reg.providers["ollama"], reg.providers["groq"]
    assert isinstance(ollama, OpenAIProvider) and isinstance(groq, OpenAIProvider)
    assert (ollama.name, ollama.label, ollama.base_url, ollama.key_env_var) == (
        "ollama", "Ollama (local)", "http://localhost:11434/v1", None)
    assert not ollama.official and "effort" not in ollama.model_info("llama3.2").params
    assert [(m.ref, m.context_window) for m in ollama.curated()] == [
        ("ollama:llama3.2", 8192), ("ollama:qwen2.5:7b", 8192)]
    assert groq.key_env_var == "GROQ_API_KEY" and groq.include_usage is False
    assert "effort" in groq.model_info("llama-3.3-70b-versatile").params
    assert [(m.id, m.label, m.context_window) for m in groq.curated()] == [
        ("llama-3.3-70b-versatile", "Llama 3.3 70B", 131072)]
    body = groq.request("llama-3.3-70b-versatile", [Message(role="user", content="x")], Params(effort="high"))
    assert body["reasoning_effort"] == "high" and "stream_options" not in body and body["max_tokens"] == 2048


def test_endpoint_without_its_key_is_unconfigured(tmp_path):
    reg = Registry.from_settings(settings({}, tmp_path, GROQ))
    assert "groq" not in reg.providers
    assert ("groq", "Groq", "set GROQ_API_KEY") in reg.unconfigured()
    with pytest.raises(NotConfigured, match="GROQ_API_KEY"):
        reg.resolve("groq:llama-3.3-70b-versatile")


def test_bad_toml_entries_are_reported_not_fatal(tmp_path):
    toml = OLLAMA + """
[[endpoint]]
name = "openai"
base_url = "http://x/v1"

[[endpoint]]
name = "Bad Name"
base_url = "http://x/v1"

[[endpoint]]
name = "nourl"

[[endpoint]]
name = "ollama"
base_url = "http://other/v1"
"""
    s = settings({}, tmp_path, toml)
    assert [e.name for e in s.endpoints] == ["ollama"]
    assert len(s.problems) == 4
    assert any("taken by a built-in provider" in p for p in s.problems)
    assert any("used twice" in p for p in s.problems)
    assert Registry.from_settings(s).problems == s.problems


def test_unreadable_toml_is_a_problem(tmp_path):
    s = settings({}, tmp_path, "[[endpoint]\nname=")
    assert s.endpoints == () and "could not read it" in s.problems[0]


def test_models_file_setting(tmp_path):
    other = tmp_path / "elsewhere.toml"
    other.write_text(OLLAMA)
    s = Settings.from_env({"PARLEY_MODELS_FILE": str(other)}, cwd=tmp_path)
    assert s.models_file == str(other) and [e.name for e in s.endpoints] == ["ollama"]
    missing = Settings.from_env({"PARLEY_MODELS_FILE": "nope.toml"}, cwd=tmp_path)
    assert missing.endpoints == () and "does not exist" in missing.problems[0]
    assert Settings.from_env({}, cwd=tmp_path).models_file is None  # no models.toml here


def test_shipped_example_parses():
    endpoints, problems = read_endpoints(REPO / "models.example.toml", {})
    assert problems == []
    assert [(e.name, e.base_url, e.key_env) for e in endpoints] == [("ollama", "http://localhost:11434/v1", None)]


def test_missing_sdk_disables_only_its_provider(tmp_path, monkeypatch):
    monkeypatch.setattr(OpenAIProvider, "sdk_missing", staticmethod(lambda: "install the openai package (pip install openai)"))
    reg = Registry.from_settings(settings({"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"}, tmp_path, OLLAMA))
    assert "openai" not in reg.providers and "ollama" not in reg.providers
    reasons = {name: reason for name, _label, reason in reg.unconfigured()}
    assert "pip install openai" in reasons["openai"] and "pip install openai" in reasons["ollama"]
    assert "anthropic" in reg.providers


# -- resolving -------------------------------------------------------------------------------------------


def test_resolve(tmp_path):
    reg = Registry.from_settings(settings({"OPENAI_API_KEY": "k"}, tmp_path, OLLAMA))
    provider, info = reg.resolve("openai:some-model-nobody-listed")
    assert provider is reg.providers["openai"] and info.id == "some-model-nobody-listed"
    assert info.params == provider.accepts - {"effort"}  # not a reasoning model's name: sampling, no effort
    provider, info = reg.resolve("ollama:qwen2.5:7b")  # colons inside the model name
    assert provider.name == "ollama" and info.id == "qwen2.5:7b" and info.context_window == 8192
    # A bare name works when exactly one known model has it.
    assert reg.resolve("qwen2.5:7b")[1].ref == "ollama:qwen2.5:7b"
    assert reg.resolve("parley-demo")[1].ref == "demo:parley-demo"
    assert reg.resolve("openai:x")[0] is reg.resolve("openai:y")[0]  # one instance, one SDK client


@pytest.mark.parametrize(
    ("ref", "wording"),
    [
        ("", "provider:model"),
        ("openai:", "names no model"),
        ("anthropic:claude-x", "set ANTHROPIC_API_KEY"),
        ("mystery:model", "Unknown provider 'mystery'"),
        ("gpt-unknown", "use provider:model"),
    ],
)
def test_resolve_refuses_with_a_clear_message(tmp_path, ref, wording):
    reg = Registry.from_settings(settings({"OPENAI_API_KEY": "k"}, tmp_path))
    with pytest.raises(NotConfigured, match=wording.replace("(", r"\(").replace(")", r"\)")):
        reg.resolve(ref)


def test_resolve_refuses_an_ambiguous_bare_name(tmp_path):
    toml = OLLAMA + OLLAMA.replace('name = "ollama"', 'name = "ollama2"')
    reg = Registry.from_settings(settings({}, tmp_path, toml))
    with pytest.raises(NotConfigured, match="ollama2:llama3.2"):
        reg.resolve("llama3.2")


class EchoProvider(Provider):
    """A test double registered the way real providers are."""

    name = "echo"
    label = "Echo"
    accepts = frozenset({"max_tokens"})

    async def stream(
        self, model: str, messages: Sequence[Message], params: Params, *, tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[StreamEvent]:
        yield TextDelta(messages[-1].content)
        yield Finish(FinishReason.STOP)

    def curated(self) -> list[ModelInfo]:
        return [ModelInfo(provider="echo", id="parrot", params=self.accepts)]


async def test_register_adds_a_provider_through_the_same_path(tmp_path):
    reg = Registry.from_settings(settings({}, tmp_path))
    reg.register(EchoProvider())
    provider, info = reg.resolve("echo:parrot")
    events = [e async for e in provider.stream(info.id, [Message(role="user", content="hi")], Params())]
    assert events == [TextDelta("hi"), Finish(FinishReason.STOP)]
    assert reg.cached_models()["echo"][0].ref == "echo:parrot"
    # Registering over an unconfigured name makes it configured.
    reg.register(OpenAIProvider(api_key="k"))
    assert "openai" not in [name for name, _, _ in reg.unconfigured()]


# -- listing ---------------------------------------------------------------------------------------------


def listing_requests(srv, provider: str) -> int:
    return sum(1 for r in srv.requests if r.provider == provider and r.method == "GET" and r.path.endswith("/models"))


async def test_list_models_live_cached_and_falling_back(fake_server, tmp_path):
    srv = fake_server
    toml = f"""
[[endpoint]]
name = "local"
label = "Fake local"
base_url = "{srv.openai_base_url}"
key_env = "FAKE_KEY"
models = ["gpt-test", "not-on-the-server"]

[[endpoint]]
name = "dead"
label = "Dead server"
base_url = "http://127.0.0.1:9/v1"
key_env = ""
models = ["dead-model"]
"""
    env = {"FAKE_KEY": "test-key", "GEMINI_API_KEY": "test-key", "GOOGLE_GEMINI_BASE_URL": srv.gemini_base_url}
    now = [1000.0]
    reg = Registry.from_settings(settings(env, tmp_path, toml), clock=lambda: now[0])
    try:
        before = reg.cached_models()  # no network: the built-in lists
        assert [m.id for m in before["local"]] == ["gpt-test", "not-on-the-server"]
        assert before["dead"][0].id == "dead-model" and before["demo"][0].id == "parley-demo"

        base_local, base_gemini = listing_requests(srv, "openai"), listing_requests(srv, "gemini")
        started = time.perf_counter()
        listed = await reg.list_models()
        # Bounded by the listing timeout (each provider at most LIST_TIMEOUT, all at once), not a speed target.
        assert time.perf_counter() - started < 3 * LIST_TIMEOUT
        assert set(listed) == {"local", "dead", "gemini", "demo"}
        local = [m.id for m in listed["local"]]
        assert local[0] == "gpt-test" and "claude-test" in local and "not-on-the-server" not in local
        assert "gemini-test" in [m.id for m in listed["gemini"]]
        assert [m.id for m in listed["dead"]] == ["dead-model"]  # failed: the curated list
        assert [m.id for m in listed["demo"]] == ["parley-demo", "reasoning-demo"]
        assert reg.cached_models() == listed

        await reg.list_models()  # within the TTL: no new requests
        assert listing_requests(srv, "openai") == base_local + 1
        assert listing_requests(srv, "gemini") == base_gemini + 1

        await reg.list_models(refresh=True)
        assert listing_requests(srv, "openai") == base_local + 2

        now[0] += 11 * 60  # past the TTL
        await reg.list_models()
        assert listing_requests(srv, "openai") == base_local + 3
    finally:
        await reg.aclose()


async def test_a_registry_reuses_one_client_per_provider(fake_server, tmp_path):
    env = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": fake_server.openai_base_url}
    reg = Registry.from_settings(settings(env, tmp_path), demo_rate=0)
    try:
        provider, info = reg.resolve("openai:tokens-2")
        clients = set()
        for _ in range(2):
            events = [e async for e in provider.stream(info.id, [Message(role="user", content="x")], Params())]
            assert events[-1].reason is FinishReason.STOP
            clients.add(id(provider._client.get()))
        assert len(clients) == 1
        demo, demo_info = reg.resolve(DEMO_REF)
        assert isinstance(demo, DemoProvider) and demo.rate == 0
    finally:
        await reg.aclose()
