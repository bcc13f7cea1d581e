"""Provider-side seams: the start-up warm race, the first-token deadline over retries, model-name checks."""

from __future__ import annotations

import gc
import re
import threading
import time
import uuid

import pytest
import sqlalchemy as sa
from gradio_client import Client

from chat.errors import InvalidInput, Overloaded
from chat.providers.anthropic import AnthropicProvider
from chat.providers.base import Provider
from chat.providers.gemini import GeminiProvider
from chat.providers.openai import OpenAIProvider
from chat.registry import MAX_MODEL_NAME_CHARS, Registry, Settings
from chat.turn import Turn, TurnPolicy
from chat.types import Message, ModelInfo, Params
from storage.models import Message as StoredMessage
from tests.apphelpers import app_env, in_process_app
from tests.fakes import Scenario

MSGS = [Message(role="user", content="hi")]
PROVIDERS = {
    # name: (class, label, build from the fake server)
    "openai": (OpenAIProvider, "OpenAI", lambda srv: OpenAIProvider(api_key="test-key", base_url=srv.openai_base_url)),
    "anthropic": (AnthropicProvider, "Anthropic",
                  lambda srv: AnthropicProvider(api_key="test-key", base_url=srv.anthropic_base_url)),
    "gemini": (GeminiProvider, "Google Gemini", lambda srv: GeminiProvider(api_key="test-key", base_url=srv.gemini_base_url)),
}


def unique(prefix: str) -> str:
    """A model name of this test's own, so the fake server's request log can be counted per test."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def posts_for(srv, model: str) -> int:
    return sum(1 for r in srv.requests if r.method == "POST" and r.model == model)


def slow_builds(monkeypatch, cls: type[Provider], pause: float) -> tuple[list[object], threading.Event]:
    """Make `cls` build its SDK client slowly, recording each client built.

    The pause only widens the window in which two builders can overlap (what a cold SDK import
    does on a real start-up); nothing here measures time.
    """
    built: list[object] = []
    entered = threading.Event()
    real = cls._build_client

    def build(self):
        entered.set()
        time.sleep(pause)
        client = real(self)
        built.append(client)
        return client

    monkeypatch.setattr(cls, "_build_client", build)
    return built, entered


# -- item 4: the start-up warm thread and the first requests share one client ------------------


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_concurrent_first_calls_and_warm_build_one_client(fake_server, monkeypatch, name):
    cls, _label, make = PROVIDERS[name]
    built, _ = slow_builds(monkeypatch, cls, 0.05)
    provider = make(fake_server)
    reg = Registry(Settings())
    reg.register(provider)
    got: list[object] = []
    start = threading.Barrier(9)

    def first_call() -> None:
        start.wait()
        got.append(provider._client.get())

    threads = [threading.Thread(target=first_call) for _ in range(8)]
    warm = threading.Thread(target=lambda: (start.wait(), reg.warm()))
    for t in (*threads, warm):
        t.start()
    for t in (*threads, warm):
        t.join(30)
    assert len(built) == 1, "the client is built once, whoever asks first"
    assert len(got) == 8 and all(c is built[0] for c in got)
    assert provider._client.get() is built[0], "warm() reused the client, it did not replace it"


@pytest.mark.parametrize("name", sorted(PROVIDERS))
async def test_stream_started_while_warming_finishes_on_the_warm_client(fake_server, monkeypatch, name):
    cls, _label, make = PROVIDERS[name]
    built, entered = slow_builds(monkeypatch, cls, 0.3)
    provider = make(fake_server)
    reg = Registry(Settings())
    reg.register(provider)
    model = unique("seams-warm")
    fake_server.set_scenario(model, Scenario(tokens=30, rate=100))
    warm = threading.Thread(target=reg.warm)
    warm.start()
    assert entered.wait(10), "warm() started building the client"
    # The first request arrives while warm() is still building, as within 0.1 s of a start-up.
    turn = Turn(provider, provider.model_info(model), MSGS, Params(), policy=TurnPolicy(first_token_timeout=30))
    events = turn.events()
    await anext(events)  # the stream has started
    warm.join(30)
    gc.collect()  # a replaced client's finaliser would close the pool under the stream now
    async for _ in events:
        pass
    r = turn.result
    assert r.error is None and len(r.text.split()) == 30, r.error
    assert len(built) == 1 and provider._client.get() is built[0]
    await provider.aclose()


@pytest.mark.parametrize("name", sorted(PROVIDERS))
async def test_an_evicted_own_key_client_is_closed_after_its_last_stream_not_during_it(fake_server, monkeypatch, name):
    """Users' own keys are kept as at most KEYED_CLIENTS providers; the least recently used one is dropped. Its
    client used to be left open (aiohttp's "Unclosed client session" in the log, the pool's sockets open until a
    collection). It is closed now, but only once nothing uses it: a reply it is streaming runs to its end."""
    import asyncio

    from chat import registry as registry_module
    from chat.providers import _common

    monkeypatch.setattr(registry_module, "KEYED_CLIENTS", 1)
    closed: list[object] = []
    close = _common._close_on_loop

    def spy(loop, client, closer):
        closed.append(client)
        close(loop, client, closer)

    monkeypatch.setattr(_common, "_close_on_loop", spy)
    done: list[object] = []  # clients whose close has finished
    finish = _common._close

    async def finishing(client, closer):
        await finish(client, closer)
        done.append(client)

    monkeypatch.setattr(_common, "_close", finishing)
    reg = Registry(Settings())
    reg.register(PROVIDERS[name][2](fake_server))
    model = unique("seams-evict")
    fake_server.set_scenario(model, Scenario(tokens=30, rate=100))
    first, info = reg.resolve_with_key(f"{name}:{model}", "test-key")  # the key the fake takes
    turn = Turn(first, info, MSGS, Params(), policy=TurnPolicy(first_token_timeout=30))
    events = turn.events()
    await anext(events)  # streaming
    client = first._client.get()
    reg.resolve_with_key(f"{name}:{model}", "second-users-key")  # the first key's provider is dropped
    gc.collect()
    assert closed == [], "closed under a reply it is streaming"
    async for _ in events:
        pass
    assert turn.result.error is None and len(turn.result.text.split()) == 30
    del first, turn, events
    assert closed == [client], "freed once its reply ended (no collection needed), and its client closed"
    async with asyncio.timeout(10):  # the close runs as a task on this loop: wait for it to end
        while not done:
            await asyncio.sleep(0)
    if hasattr(client, "is_closed"):  # the OpenAI and Anthropic SDKs say so
        assert client.is_closed()
    # At shutdown the registry closes the own-key clients still cached, as the server's own.
    cached = reg.resolve_with_key(f"{name}:{model}", "third-users-key")[0]._client.get()
    await reg.aclose()
    if hasattr(cached, "is_closed"):
        assert cached.is_closed()


def test_the_same_user_key_from_many_threads_gets_one_provider(fake_server, monkeypatch):
    reg = Registry(Settings())
    reg.register(PROVIDERS["openai"][2](fake_server))
    real = OpenAIProvider.with_api_key
    clones: list[Provider] = []

    def slow_clone(self, api_key):
        time.sleep(0.05)  # widens the window in which two first calls overlap
        clone = real(self, api_key)
        clones.append(clone)
        return clone

    monkeypatch.setattr(OpenAIProvider, "with_api_key", slow_clone)
    start = threading.Barrier(6)
    got: list[Provider] = []

    def first_call() -> None:
        start.wait()
        got.append(reg.resolve_with_key("openai:gpt-test", "user-own-key")[0])

    threads = [threading.Thread(target=first_call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(clones) == 1 and len(got) == 6 and all(p is clones[0] for p in got)


# -- item 7: FIRST_TOKEN_TIMEOUT is the user's whole wait -----------------------------------------


@pytest.mark.parametrize("name", sorted(PROVIDERS))
async def test_silent_provider_costs_one_first_token_timeout_not_one_per_attempt(fake_server, name):
    _cls, label, make = PROVIDERS[name]
    provider = make(fake_server)
    provider.warm()  # the SDK import is not part of what is timed here
    model = unique("seams-silent")
    fake_server.set_scenario(model, Scenario(stall_after=0, stall_seconds=30))  # headers, then nothing
    policy = TurnPolicy(first_token_timeout=1.0)  # max_attempts stays 4
    r = await Turn(provider, provider.model_info(model), MSGS, Params(), policy=policy).run()
    await provider.aclose()
    assert r.error is not None and r.error.kind == "first_token_timeout", r.error
    assert r.attempts == 1, "no retry once the deadline has passed"
    fake_server.wait_for(lambda: posts_for(fake_server, model) >= 1, timeout=5)
    assert posts_for(fake_server, model) == 1, "the server saw one attempt"
    assert r.error.message.startswith(f"{label} sent nothing for "), r.error.message
    waited = float(re.search(r"sent nothing for ([\d.]+) s", r.error.message).group(1))
    assert waited >= 1.0, "the notice gives the real wait"


class AlwaysOverloaded(Provider):
    name = "busy"
    label = "Busy Endpoint"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, model, messages, params, *, tools=()):
        self.calls += 1
        raise Overloaded(provider=self.label)
        yield  # pragma: no cover - makes this an async generator


async def test_a_retry_whose_backoff_passes_the_deadline_is_not_made():
    provider = AlwaysOverloaded()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)  # not waited: the backoff must count all the same

    policy = TurnPolicy(first_token_timeout=1.0, backoff_base=5.0, backoff_max=5.0)
    info = ModelInfo(provider="busy", id="m")
    r = await Turn(provider, info, MSGS, Params(), policy=policy, sleep=sleep).run()
    assert provider.calls == 1 and waits == []
    assert isinstance(r.error, Overloaded), "the real failure is reported"


async def test_retries_still_happen_within_the_remaining_time(fake_server):
    provider = PROVIDERS["openai"][2](fake_server)
    model = unique("seams-retry")
    fake_server.set_scenario(model, Scenario(fail_status=500, fail_times=1, tokens=5))
    policy = TurnPolicy(first_token_timeout=30, backoff_base=0.01, backoff_max=0.02)
    r = await Turn(provider, provider.model_info(model), MSGS, Params(), policy=policy).run()
    await provider.aclose()
    assert r.error is None and r.attempts == 2 and posts_for(fake_server, model) == 2


# -- part of item 9: model names are checked before any call -------------------------------------


@pytest.fixture
def registry(fake_server):
    env = {
        "OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": fake_server.openai_base_url,
        "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": fake_server.anthropic_base_url,
        "GEMINI_API_KEY": "test-key", "GOOGLE_GEMINI_BASE_URL": fake_server.gemini_base_url,
        "PARLEY_MODELS_FILE": "",
    }
    return Registry.from_settings(Settings.from_env(env))


BAD_REFS = [
    ("gemini:" + "g" * 5000, "5,000 characters"),
    ("openai:" + "a" * (MAX_MODEL_NAME_CHARS + 1), "characters long"),
    ("gemini:models/../files", "'..'"),
    ("gemini:../../v1beta/files", "'..'"),
    ("gemini:gemini..flash", "'..'"),
    ("anthropic:claude/../x", "'..'"),
    ("openai:./gpt-test", "'..'"),
    ("demo:../parley-demo", "'..'"),
    ("gemini:gemini-2.5-flash?alt=json", "not a valid Google Gemini model name"),
    ("gemini:gemini-2.5-flash:generateContent", "not a valid Google Gemini model name"),
    ("gemini:/gemini-2.5-flash", "not a valid Google Gemini model name"),
    ("openai:gpt 4o", "spaces or control characters"),
    ("openai:gpt-4o\x00", "spaces or control characters"),
    ("anthropic:claude\u200b-x", "spaces or control characters"),
    ("openai:gpt-4o\"}", "not a valid OpenAI model name"),
]


@pytest.mark.parametrize("ref,why", BAD_REFS, ids=[f"bad{i}" for i in range(len(BAD_REFS))])
def test_malformed_model_names_are_refused_with_a_clear_message(registry, fake_server, ref, why):
    before = len(fake_server.requests)
    with pytest.raises(InvalidInput) as refused:
        registry.resolve(ref)
    assert why in refused.value.message and len(refused.value.message) < 300
    with pytest.raises(InvalidInput):
        registry.resolve_with_key(ref, "a-user-key")
    assert not registry._keyed, "no client is built for a refused name"
    assert len(fake_server.requests) == before


@pytest.mark.parametrize("ref", [
    "gemini:gemini-2.5-flash", "gemini:models/gemini-2.5-flash", "gemini:tunedModels/my-tuned-1",
    "gemini:brand-new-gemini-9", "openai:ft:gpt-4o-mini-2024-07-18:my-org::abc123", "openai:gpt-9-unreleased",
    "openai:meta-llama/Llama-3.1-8B-Instruct:free", "openai:qwen2.5:7b", "anthropic:claude-sonnet-4-5@20250929",
    "openai:" + "a" * MAX_MODEL_NAME_CHARS,
])
def test_well_formed_names_are_accepted_known_or_not(registry, ref):
    provider, info = registry.resolve(ref)
    assert info.ref == ref and provider.name == ref.partition(":")[0]


def test_default_model_takes_any_well_formed_name_and_falls_back_from_a_malformed_one(fake_server):
    base = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": fake_server.openai_base_url, "PARLEY_MODELS_FILE": ""}
    unknown = Registry.from_settings(Settings.from_env({**base, "DEFAULT_MODEL": "openai:not-released-yet"}))
    assert unknown.default_model == "openai:not-released-yet"
    malformed = Registry.from_settings(Settings.from_env({**base, "DEFAULT_MODEL": "openai:../" + "x" * 5000}))
    fallback = malformed.default_model  # start-up goes on, on a usable model
    assert ".." not in fallback and malformed.resolve(fallback)[1].ref == fallback


@pytest.fixture(scope="module")
def app(fake_server, tmp_path_factory):
    db = tmp_path_factory.mktemp("seamsdb") / "parley.db"
    with in_process_app(app_env(fake_server, f"sqlite:///{db}")) as (url, services):
        yield url, services


@pytest.mark.parametrize("model", ["gemini:" + "x" * 5000, "gemini:models/../secret", "openai:gpt\ttest"],
                         ids=["long", "path", "tab"])
def test_a_refused_model_name_sends_nothing_and_saves_nothing(app, fake_server, model):
    url, services = app
    text = f"hello {uuid.uuid4().hex}"
    before = len(fake_server.requests)
    reply = Client(url, verbose=False).predict(message=text, model=model, system_prompt="", api_name="/chat")
    shown = str(reply)
    assert "model name" in shown and "unexpectedly" not in shown
    assert len(fake_server.requests) == before, "nothing reached a provider"
    with services.engine.connect() as c:
        saved = c.execute(sa.select(StoredMessage.__table__.c.role).where(StoredMessage.__table__.c.content == text)).all()
    assert saved == [], "no turn (and no error turn) was saved"
