"""Rate limits that cannot be escaped or amplified (issue 12, item 2).

Through the running app (gradio_client and raw queue calls) and the batch handler, on the in-memory
limiter and on real Redis: a new session or browser id from the same address gets no fresh allowance,
a compare run counts one call per pane, a batch run draws on its own budget and is refused before any
provider call, X-Forwarded-For counts only from TRUSTED_PROXIES, logged-in users are limited per user.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from gradio_client import Client

from core.config import AppConfig, new_browser_id
from core.identity import client_address, parse_proxies
from core.ratelimit import Identity, RateLimiter
from tests.apphelpers import app_env, in_process_app
from tests.fakes import Scenario
from tests.gradio_raw import RawGradio
from tests.test_batch_ui import make_view, prompts_file


@pytest.fixture(scope="module", params=["memory", "redis"])
def redis_url(request) -> str | None:
    """The limiter's storage: in memory (None), or real Redis."""
    if request.param == "memory":
        return None
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set (no Redis to test against)")
    return url


@pytest.fixture
def backend(redis_url) -> dict[str, str]:
    """Settings for the limiter's storage; Redis windows live under a prefix of this test's own."""
    if redis_url is None:
        yield {}
        return
    prefix = f"parley-seams-{uuid.uuid4().hex[:10]}"
    yield {"REDIS_URL": redis_url, "PARLEY_RATE_PREFIX": prefix}
    asyncio.run(RateLimiter("1/minute", redis_url, prefix=prefix).reset())  # its own client: the app's loop is gone


@pytest.fixture(scope="module")
def shared_app(fake_server, tmp_path_factory, redis_url):
    """One running app for the tests whose settings differ only in RATE_LIMIT (each test gets a fresh
    limiter: `limited`); TRUSTED_PROXIES and APP_USERS are read at launch, so those tests launch their own."""
    extra = {"REDIS_URL": redis_url, "PARLEY_RATE_PREFIX": f"parley-seams-{uuid.uuid4().hex[:10]}"} if redis_url else {}
    env = app_env(fake_server, f"sqlite:///{tmp_path_factory.mktemp('rl') / 'rl.db'}", **extra)
    with in_process_app(env) as (url, services):
        assert services.limiter.backend == ("redis" if redis_url else "memory"), "the app built the limiter it was told to"
        yield url, services, env


@pytest.fixture
def limited(shared_app, backend):
    """The shared app with a fresh limiter for this test: `limited(rate)` -> (url, services).

    Built exactly as the app builds its own (RateLimiter.from_config of the app's settings with this
    test's RATE_LIMIT and Redis prefix), so nothing another test used counts here.
    """
    url, services, env = shared_app
    launched = services.limiter

    def limit(rate: str):
        services.limiter = RateLimiter.from_config(AppConfig.from_env({**env, **backend, "RATE_LIMIT": rate}))
        return url, services

    yield limit
    services.limiter = launched


def fake_model(fake_server, name: str) -> str:
    """A model of this test's own on the fake server (so that its request count is this test's alone)."""
    name = f"{name}-{uuid.uuid4().hex[:8]}"
    fake_server.set_scenario(name, Scenario())
    return f"openai:{name}"


def calls_to(fake_server, model: str) -> int:
    """Requests the fake provider received for `model` (each test uses a model name of its own)."""
    return sum(1 for r in fake_server.requests if r.model == model.split(":", 1)[1])


def chat(client: Client, model: str, message: str = "hello") -> str:
    return json.dumps(client.predict(message=message, model=model, system_prompt="", api_name="/chat"))


def raw_chat(raw: RawGradio, model: str, message: str = "hello") -> str:
    """The chat event by index, as the browser sends it (the owner comes from this session's state)."""
    return json.dumps(raw.call("chat", [message, [], model, "", None, None, None, 0, "default", "", False, None, None]))


def raw_from(url: str, source: str, forwarded_for: str | None = None) -> RawGradio:
    """A raw Gradio session whose TCP connections come from `source` (a 127/8 address) with an XFF header."""
    raw = RawGradio(url)
    raw.http.close()
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    raw.http = httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=source), headers=headers,
                            timeout=30.0)
    return raw


# -- escapes: a fresh owner from the same address ----------------------------------------------


def test_reset_session_gets_no_fresh_allowance(fake_server, limited, backend):
    model = fake_model(fake_server, "seams-reset")
    url, services = limited("3/minute")
    assert services.limiter.backend == (backend and "redis" or "memory")
    client = Client(url, verbose=False)
    for i in range(3):
        assert "lorem" in chat(client, model, f"turn {i}")
    client.reset_session()  # a new gradio_client session: a new anonymous owner
    refused = chat(client, model, "from a fresh session")
    assert "too fast" in refused and "lorem" not in refused
    other = Client(url, verbose=False)  # a second client from the same address
    assert "too fast" in chat(other, model, "from a new client")
    assert calls_to(fake_server, model) == 3, "the refused messages never reached the provider"


def test_a_fresh_browser_id_from_the_same_address_gets_no_fresh_allowance(fake_server, limited):
    model = fake_model(fake_server, "seams-browser-id")
    url, _services = limited("2/minute")
    first = RawGradio(url)
    first.call("on_load", [new_browser_id()])
    assert all("lorem" in raw_chat(first, model, f"turn {i}") for i in range(2))
    fresh = RawGradio(url)
    fresh.call("on_load", [new_browser_id()])  # a brand-new browser id, as a cleared localStorage sends
    refused = raw_chat(fresh, model, "with a new id")
    assert "too fast" in refused and "lorem" not in refused
    assert calls_to(fake_server, model) == 2
    first.close()
    fresh.close()


# -- amplification: one request, many provider calls --------------------------------------------


def test_a_four_pane_compare_counts_four_calls(fake_server, limited):
    models = [fake_model(fake_server, f"seams-pane-{i}") for i in range(4)]
    url, _services = limited("5/minute")
    client = Client(url, verbose=False)
    panes = client.predict(message="compare", models=models, api_name="/compare")
    assert [p["error"] for p in panes] == [None] * 4
    with pytest.raises(Exception) as refused:  # 4 + 2 > 5: refused whole, no pane starts
        client.predict(message="again", models=models[:2], api_name="/compare")
    assert "needs 2 provider calls" in str(refused.value) and "1 are left" in str(refused.value)
    assert [calls_to(fake_server, m) for m in models] == [1, 1, 1, 1]
    assert "lorem" in chat(client, models[0], "the fifth call fits")  # the one call left is still there
    assert "too fast" in chat(client, models[0], "the sixth does not")
    assert calls_to(fake_server, models[0]) == 2


@dataclass
class AddressedRequest:
    """What the batch handler reads from a gr.Request: the session and the TCP peer."""

    session_hash: str
    host: str = "192.0.2.10"
    username: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def client(self) -> Any:
        return SimpleNamespace(host=self.host, port=40000)


async def run_batch(view, file: str, models: list[str], request: AddressedRequest) -> str:
    outs = [out async for out in view.handlers.run(file, models, 4, "", None, None, None, request)]
    return outs[-1][view.status]


def test_a_batch_over_its_budget_is_refused_before_any_provider_call(fake_server, tmp_path, backend):
    models = [fake_model(fake_server, "seams-batch-a"), fake_model(fake_server, "seams-batch-b")]
    # RATE_LIMIT (chat and compare) is tiny: a batch run draws on its own budget, not on it.
    view = make_view(fake_server, tmp_path, RATE_LIMIT="1/minute", BATCH_RATE_LIMIT="10/hour", **backend)
    file = prompts_file(tmp_path, ["a", "b", "c"], name="three.txt")
    six = prompts_file(tmp_path, [str(i) for i in range(6)], name="six.txt")
    alice = AddressedRequest("alice-session")

    async def scenario() -> None:  # one event loop: the Redis client belongs to it
        assert "6/6 done" in await run_batch(view, file, models, alice)
        before = [calls_to(fake_server, m) for m in models]
        refused = await run_batch(view, file, models, alice)  # 6 more calls, 4 left
        assert "needs 6 calls" in refused and "3 prompt(s) × 2 model(s)" in refused and "4 are left" in refused
        assert [calls_to(fake_server, m) for m in models] == before, "a refused run sends nothing"
        # A new anonymous session from the same address is the same budget; one from elsewhere is not.
        assert "needs 6 calls" in await run_batch(view, file, models, AddressedRequest("new-session"))
        assert "6/6 done" in await run_batch(view, file, models, AddressedRequest("elsewhere", host="192.0.2.99"))
        too_big = await run_batch(view, six, models, AddressedRequest("big", host="192.0.2.77"))
        assert "needs 12 calls" in too_big and "more than the whole batch budget" in too_big
        assert [calls_to(fake_server, m) for m in models] == [6, 6]

    asyncio.run(scenario())


# -- the client address ------------------------------------------------------------------------


def test_x_forwarded_for_is_ignored_without_trusted_proxies(fake_server, limited):
    model = fake_model(fake_server, "seams-xff-off")
    url, _services = limited("2/minute")  # the shared app has no TRUSTED_PROXIES
    one = raw_from(url, "127.0.0.2", "203.0.113.1")
    assert all("lorem" in raw_chat(one, model, f"turn {i}") for i in range(2))
    # Another session from the same peer claiming another address: the claim is not believed.
    two = raw_from(url, "127.0.0.2", "203.0.113.2")
    assert "too fast" in raw_chat(two, model)
    # A different peer is a different address.
    three = raw_from(url, "127.0.0.3")
    assert "lorem" in raw_chat(three, model)
    assert calls_to(fake_server, model) == 3
    for raw in (one, two, three):
        raw.close()


def test_x_forwarded_for_is_used_behind_a_trusted_proxy(fake_server, tmp_path, backend):
    model = fake_model(fake_server, "seams-xff-on")
    env = app_env(fake_server, f"sqlite:///{tmp_path / 'rl.db'}", RATE_LIMIT="2/minute",
                  TRUSTED_PROXIES="127.0.0.2", **backend)
    with in_process_app(env) as (url, _services):
        one = raw_from(url, "127.0.0.2", "203.0.113.1")
        assert all("lorem" in raw_chat(one, model, f"turn {i}") for i in range(2))
        # Through the proxy, another client address has its own window.
        two = raw_from(url, "127.0.0.2", "203.0.113.2")
        assert "lorem" in raw_chat(two, model)
        # A client that prepends a made-up hop is still known by the hop the proxy appended.
        spoof = raw_from(url, "127.0.0.2", "198.51.100.9, 203.0.113.1")
        assert "too fast" in raw_chat(spoof, model)
        # X-Forwarded-For from a peer that is not a trusted proxy is ignored: 127.0.0.3 is one address.
        direct_a = raw_from(url, "127.0.0.3", "203.0.113.50")
        direct_b = raw_from(url, "127.0.0.3", "203.0.113.51")
        assert all("lorem" in raw_chat(direct_a, model, f"turn {i}") for i in range(2))
        assert "too fast" in raw_chat(direct_b, model)
        assert calls_to(fake_server, model) == 5
        for raw in (one, two, spoof, direct_a, direct_b):
            raw.close()


def test_logged_in_users_are_not_limited_by_each_others_address(fake_server, tmp_path, backend):
    model = fake_model(fake_server, "seams-users")
    env = app_env(fake_server, f"sqlite:///{tmp_path / 'rl.db'}", RATE_LIMIT="2/minute",
                  APP_USERS="alice:wonderland,bob:builder", **backend)
    with in_process_app(env) as (url, _services):
        alice = Client(url, auth=("alice", "wonderland"), verbose=False)
        assert all("lorem" in chat(alice, model, f"turn {i}") for i in range(2))
        assert "too fast" in chat(alice, model, "one too many")
        bob = Client(url, auth=("bob", "builder"), verbose=False)  # same address (an office), own budget
        assert all("lorem" in chat(bob, model, f"turn {i}") for i in range(2))
        assert calls_to(fake_server, model) == 4


# -- the rule itself ----------------------------------------------------------------------------


def request_from(host: str, forwarded_for: str | None = None) -> Any:
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
    return SimpleNamespace(client=SimpleNamespace(host=host, port=1234), headers=headers)


def test_client_address_trusts_x_forwarded_for_only_from_trusted_proxies():
    proxies = parse_proxies("10.0.0.0/8, 192.0.2.1")
    assert client_address(request_from("198.51.100.7", "203.0.113.9")) == "198.51.100.7"
    assert client_address(request_from("198.51.100.7", "203.0.113.9"), proxies) == "198.51.100.7"
    assert client_address(request_from("10.1.2.3", "203.0.113.9"), proxies) == "203.0.113.9"
    # Right-most untrusted: the hops a client wrote itself (left) are skipped, trusted hops too.
    assert client_address(request_from("10.1.2.3", "1.1.1.1, 203.0.113.9, 192.0.2.1"), proxies) == "203.0.113.9"
    # A garbled hop where the client's address should be: charge the proxy, never the made-up name.
    assert client_address(request_from("10.1.2.3", "1.1.1.1, not-an-ip"), proxies) == "10.1.2.3"
    # IPv6 hosts can rotate through their /64: the /64 is one address.
    a = client_address(request_from("2001:db8:1:2::1"))
    assert a == client_address(request_from("2001:db8:1:2:ffff::9")) == "2001:db8:1:2::/64"
    assert client_address(SimpleNamespace()) is None
    with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
        parse_proxies("nginx")


def test_settings_are_checked_with_a_clear_message():
    config = AppConfig.from_env({"TRUSTED_PROXIES": "10.0.0.0/8,127.0.0.1"})
    assert config.batch_rate_limit == "200/hour" and config.forwarded_allow_ips() == "10.0.0.0/8,127.0.0.1/32"
    assert AppConfig.from_env({}).forwarded_allow_ips() == "", "uvicorn trusts no proxy unless told"
    with pytest.raises(ValueError, match="BATCH_RATE_LIMIT.*calls/period"):
        AppConfig.from_env({"BATCH_RATE_LIMIT": "lots"})
    with pytest.raises(ValueError, match="RATE_LIMIT"):
        AppConfig.from_env({"RATE_LIMIT": "20 a minute"})


def test_a_charge_is_all_or_nothing_and_anonymous_owners_share_their_address():
    async def main() -> None:
        limiter = RateLimiter("5/minute")
        here = "192.0.2.5"
        assert (await limiter.charge(Identity("session:a", here), calls=4)).allowed
        refused = await limiter.charge(Identity("session:a", here), calls=2)
        assert not refused.allowed and refused.remaining == 1 and "needs 2 provider calls" in refused.message
        assert not (await limiter.charge(Identity("anon-" + "x" * 22, here), calls=2)).allowed
        assert (await limiter.charge(Identity("session:b", here), calls=1)).allowed, "the refusal charged nothing"
        assert not (await limiter.charge(Identity("session:c", here))).allowed
        assert (await limiter.charge(Identity("session:c", "192.0.2.6"))).allowed
        # Logged-in owners are never keyed by address.
        assert Identity("user:alice", here).keys() == ["owner:user:alice"]
        assert (await limiter.charge(limiter.identity(request_from(here), "user:alice"), calls=5)).allowed
        assert (await limiter.charge(limiter.identity(request_from(here), "user:bob"), calls=5)).allowed
        # The batch budget is separate from the calls budget.
        batch = RateLimiter("1/minute", batch_rate="3/hour")
        assert (await batch.charge(Identity("user:alice"), calls=3, budget="batch")).allowed
        assert (await batch.charge(Identity("user:alice"))).allowed
        assert not (await batch.charge(Identity("user:alice"), budget="batch")).allowed

    asyncio.run(main())
