"""Every fault through the real SDKs and the turn runner, on every provider."""

from __future__ import annotations

import pytest

from chat.errors import AuthError, ModelNotFound
from chat.registry import Registry, Settings
from chat.turn import Turn, TurnPolicy
from chat.types import FinishReason, Message, Params
from tests.apphelpers import app_env
from tests.fakes import Scenario

PROVIDERS = ["openai", "anthropic", "gemini"]
MSGS = [Message(role="user", content="hi")]


@pytest.fixture
def registry(fake_server):
    env = app_env(fake_server, "sqlite://")
    return Registry.from_settings(Settings.from_env(env))


async def run(registry, ref, **policy):
    provider, info = registry.resolve(ref)
    turn = Turn(provider, info, MSGS, Params(max_tokens=256), policy=TurnPolicy(backoff_base=0.01, **policy))
    return await turn.run()


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [429, 500, 503, 529])
async def test_transient_failures_before_the_first_token_are_retried(registry, fake_server, provider, status):
    model = f"fault-{status}-{provider}"
    fake_server.set_scenario(model, Scenario(fail_status=status, fail_times=2, retry_after=0.01, tokens=5))
    r = await run(registry, f"{provider}:{model}")
    assert r.error is None and r.finish_reason is FinishReason.STOP
    assert r.attempts == 3 and len(r.text.split()) == 5
    assert len([q for q in fake_server.requests if q.model == model]) == 3


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault,kind,reason", [
    (dict(drop_after=5), "stream", FinishReason.ERROR),
    (dict(error_after=5), "stream", FinishReason.ERROR),
    (dict(truncate_after=5), "stream", FinishReason.TRUNCATED),
    (dict(stall_after=5, stall_seconds=5), "idle_timeout", FinishReason.ERROR),
])
async def test_failures_after_the_first_token_keep_the_partial_text(registry, fake_server, provider, fault, kind, reason):
    model = f"after-{next(iter(fault))}-{provider}"
    fake_server.set_scenario(model, Scenario(tokens=20, **fault))
    r = await run(registry, f"{provider}:{model}", idle_timeout=0.5)
    assert len(r.text.split()) == 5, "the five tokens before the fault are kept"
    assert r.finish_reason is reason and r.error is not None and r.error.kind == kind
    assert r.attempts == 1, "never retried after the first token"
    assert "retry" in r.error.message.lower() or "cut off" in r.error.message.lower()


@pytest.mark.parametrize("provider,env_var", [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY"), ("gemini", "GEMINI_API_KEY")])
async def test_bad_key_names_the_setting_and_is_not_retried(fake_server, provider, env_var):
    env = app_env(fake_server, "sqlite://", **{env_var: "wrong-key"})
    registry = Registry.from_settings(Settings.from_env(env))
    before = len(fake_server.requests)
    r = await run(registry, f"{provider}:gpt-test")
    assert isinstance(r.error, AuthError) and env_var in r.error.message
    assert len(fake_server.requests) == before + 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_unknown_model_is_reported_and_not_retried(registry, fake_server, provider):
    before = len(fake_server.requests)
    r = await run(registry, f"{provider}:no-such-model-xyz")
    assert isinstance(r.error, ModelNotFound) and "no-such-model-xyz" in r.error.message
    assert len(fake_server.requests) == before + 1
