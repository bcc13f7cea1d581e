"""Hardening through the running app: rate limits, secrets, own keys, moderation, logs, bad input."""

from __future__ import annotations

import json
import logging
import os

import httpx
import pytest
import sqlalchemy as sa
from gradio_client import Client
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chat.context import clean_text
from core.ratelimit import RateLimiter
from storage.models import Conversation, Message
from tests.apphelpers import app_env, in_process_app
from tests.fakes import FakeServer, Scenario
from tests.gradio_raw import RawGradio
from ui.convert import to_messages

PLANTED = "sk-PLANTED-7f3a9c1e5b2d4068a1f9e3c7b5d2a4f6"


def answer(messages) -> str:
    return "".join(m["content"] for m in messages if not (m.get("metadata") or {}).get("title"))


# -- rate limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_rate_limit_per_user_says_how_long_to_wait_and_spares_others(fake_server, tmp_path, backend):
    extra = {"RATE_LIMIT": "3/minute"}
    if backend == "redis":
        url = os.environ.get("TEST_REDIS_URL")
        if not url:
            pytest.skip("TEST_REDIS_URL is not set (no Redis to test against)")
        extra["REDIS_URL"] = url
    env = app_env(fake_server, f"sqlite:///{tmp_path / 'rl.db'}", **extra)
    with in_process_app(env) as (url, services):
        assert services.limiter.backend == backend
        before = len(fake_server.requests)
        a = Client(url, verbose=False)
        for i in range(3):
            assert "lorem" in answer(a.predict(message=f"hello {i}", model="openai:gpt-test", system_prompt="", api_name="/chat"))
        limited = a.predict(message="one too many", model="openai:gpt-test", system_prompt="", api_name="/chat")
        text = json.dumps(limited)
        assert "too fast" in text and "wait" in text and " s " in text or " s." in text
        assert len(fake_server.requests) == before + 3, "the limited message never reached the provider"
        # Another anonymous client from the same address is no one else: it shares the address's window
        # (logged-in users are spared each other's address: tests/test_ratelimit_seams.py).
        b = Client(url, verbose=False)
        assert "too fast" in json.dumps(b.predict(message="a fresh session", model="openai:gpt-test", system_prompt="", api_name="/chat"))
    if backend == "redis":
        import asyncio

        asyncio.run(RateLimiter("3/minute", extra["REDIS_URL"]).reset())  # its own client: the app's loop is gone


def test_redis_limits_are_shared_between_processes():
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set (no Redis to test against)")
    import asyncio

    async def main():
        one, two = RateLimiter("2/minute", url, prefix="parley-shared-test"), RateLimiter("2/minute", url, prefix="parley-shared-test")
        await one.reset()
        try:
            assert (await one.hit("user:x")).allowed
            assert (await two.hit("user:x")).allowed
            third = await one.hit("user:x")
            assert not third.allowed and 0 < third.retry_after <= 60
            assert (await two.hit("user:y")).allowed
        finally:
            await one.reset()

    asyncio.run(main())


# -- secrets ------------------------------------------------------------------------------------


def test_a_planted_key_appears_nowhere(tmp_path, caplog):
    with FakeServer(api_key=PLANTED) as fake:
        fake.set_scenario("leaky", Scenario(echo=True))
        env = app_env(fake, f"sqlite:///{tmp_path / 'sec.db'}", OPENAI_API_KEY=PLANTED, ANTHROPIC_API_KEY=PLANTED,
                      GEMINI_API_KEY=PLANTED, LOG_CONTENT="true")
        caplog.set_level(logging.DEBUG)
        with in_process_app(env) as (url, services):
            client = Client(url, verbose=False)
            reply = client.predict(message="say something", model="openai:leaky", system_prompt="", api_name="/chat")
            assert "You said" in answer(reply), "the planted key works against the fake"
            bad = client.predict(message="break", model="anthropic:fail-500-always", system_prompt="", api_name="/chat")
            surfaces = {
                "config": httpx.get(url + "/config").text,
                "info": httpx.get(url + "/gradio_api/info").text,
                "page": httpx.get(url + "/").text,
                "answers": json.dumps([reply, bad]),
                "logs": caplog.text,
            }
            with services.engine.connect() as c:
                rows = [dict(r) for t in (Conversation, Message) for r in c.execute(sa.select(t.__table__)).mappings()]
            surfaces["database"] = json.dumps(rows, default=str)
            from sqlmodel import Session

            from storage import repository as repo

            with Session(services.engine) as s:
                owner = rows[0]["owner"]
                surfaces["export json"] = repo.export_json(session=s, owner=owner)
                surfaces["export md"] = repo.export_markdown(session=s, owner=owner)
            for name, text in surfaces.items():
                assert PLANTED not in text, f"the key leaked into {name}"
                assert PLANTED[:12] not in text, f"part of the key leaked into {name}"
            assert len(surfaces["logs"]) > 0 and '"event": "turn"' in surfaces["logs"]


def test_users_own_key_is_used_for_their_turns_only_and_never_kept(tmp_path, caplog):
    own = "sk-user-own-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    with FakeServer(api_key=own) as fake:
        env = app_env(fake, f"sqlite:///{tmp_path / 'byok.db'}", OPENAI_API_KEY="server-key-that-fails")
        caplog.set_level(logging.DEBUG)
        with in_process_app(env) as (url, services):
            client = Client(url, verbose=False)
            refused = client.predict(message="with the server key", model="openai:gpt-test", system_prompt="", api_name="/chat")
            assert "OPENAI_API_KEY" in json.dumps(refused), "a refused key names the setting to fix"
            ok = client.predict(message="with my key", model="openai:gpt-test", system_prompt="", api_key=own, api_name="/chat")
            assert "lorem" in answer(ok)
            # a provider the server has no key for works with the user's key too
            services.registry._unconfigured.pop("anthropic", None)
            other = Client(url, verbose=False)
            sent = [r for r in fake.requests if r.json and "with my key" in json.dumps(r.json)]
            assert sent and sent[-1].headers["authorization"] == f"Bearer {own}"
            with services.engine.connect() as c:
                db = json.dumps([dict(r) for t in (Conversation, Message) for r in c.execute(sa.select(t.__table__)).mappings()], default=str)
            assert own not in db and own not in caplog.text and own not in httpx.get(url + "/config").text
            del other


# -- moderation ---------------------------------------------------------------------------------


def test_moderation_refuses_flagged_messages_politely_and_stores_them(fake_server, tmp_path):
    env = app_env(fake_server, f"sqlite:///{tmp_path / 'mod.db'}", MODERATION="openai")
    with in_process_app(env) as (url, services):
        client = Client(url, verbose=False)
        before = [r for r in fake_server.requests if r.path.endswith("/chat/completions")]
        refused = client.predict(message="please FLAGME now", model="openai:gpt-test", system_prompt="", api_name="/chat")
        assert "flagged" in json.dumps(refused).lower() and "rephrase" in json.dumps(refused).lower()
        after = [r for r in fake_server.requests if r.path.endswith("/chat/completions")]
        assert len(after) == len(before), "a flagged message never reaches the model"
        fine = client.predict(message="a harmless question", model="openai:gpt-test", system_prompt="", api_name="/chat")
        assert "lorem" in answer(fine)
        with services.engine.connect() as c:
            msgs = c.execute(sa.select(Message.__table__).order_by(Message.__table__.c.position)).mappings().all()
        flagged = [m for m in msgs if m["finish_reason"] == "content_filter"]
        assert flagged and "flagged by moderation" in flagged[0]["error"]
        assert any(m["role"] == "user" and "FLAGME" in m["content"] for m in msgs)


# -- logs ---------------------------------------------------------------------------------------


def test_one_structured_log_line_per_turn_without_content(fake_server, tmp_path, caplog):
    env = app_env(fake_server, f"sqlite:///{tmp_path / 'log.db'}")
    caplog.set_level(logging.INFO, logger="parley.turns")
    with in_process_app(env) as (url, _):
        Client(url, verbose=False).predict(message="my very private prompt", model="openai:gpt-test", system_prompt="", api_name="/chat")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "parley.turns"]
    assert len(lines) == 1
    line = lines[0]
    assert line["model"] == "openai:gpt-test" and line["outcome"] == "stop" and line["saved"] is True
    assert line["owner"].startswith("session:") and line["ttft_ms"] is not None and line["output_tokens"] == 20
    assert "private prompt" not in caplog.text and "prompt" not in line


# -- bad input ----------------------------------------------------------------------------------


def test_long_and_odd_messages(fake_server, tmp_path):
    env = app_env(fake_server, f"sqlite:///{tmp_path / 'bad.db'}", MAX_MESSAGE_CHARS="1000")
    with in_process_app(env) as (url, services):
        client = Client(url, verbose=False)
        before = len(fake_server.requests)
        too_long = client.predict(message="x" * 5000, model="openai:gpt-test", system_prompt="", api_name="/chat")
        assert "limit is 1,000" in json.dumps(too_long) and len(fake_server.requests) == before
        odd = client.predict(message="bell\x07 nul\x00 and <script>alert(1)</script>",
                             model="openai:echo", system_prompt="", api_name="/chat")
        said = answer(odd)
        assert "\x00" not in said and "\x07" not in said and "<script>" in said  # kept as text, never run
        # A lone surrogate arrives JSON-escaped (no client can encode it otherwise): send it raw.
        raw = RawGradio(url)
        fn = raw.fn_index("chat")
        payload = {"data": ["a lone \ud800 surrogate", None, "openai:echo", "", 1.0, 1.0, 2048, None, "default", "", False, None, None],
                   "fn_index": fn, "session_hash": raw.session_hash, "event_data": None, "trigger_id": None}
        r = raw.http.post("/gradio_api/queue/join", content=json.dumps(payload).encode("ascii"),
                          headers={"content-type": "application/json"})
        assert r.status_code == 200
        with raw.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": raw.session_hash}) as stream:
            done = next(json.loads(line[5:]) for line in stream.iter_lines()
                        if line.startswith("data:") and json.loads(line[5:]).get("msg") == "process_completed")
        raw.close()
        assert done["success"], done
        with services.engine.connect() as c:
            stored = c.execute(sa.select(Message.__table__.c.content).where(Message.__table__.c.role == "user")).scalars().all()
        assert any("surrogate" in s and "\x00" not in s for s in stored)
        assert any("lone" in s and "\ud800" not in s for s in stored)


def _texts(content) -> list[str]:
    """The texts a history entry's content may put before the model: its text parts' own, not only their repr."""
    if isinstance(content, dict):
        return [str(content.get("text", "")), str(content)]
    if isinstance(content, list):
        return [t for part in content for t in _texts(part)] + [str(content)]
    return [str(content)]


@given(st.lists(st.fixed_dictionaries({
    "role": st.sampled_from(["user", "assistant", "system", "tool", "weird"]),
    "content": st.one_of(st.text(st.characters(blacklist_categories=())), st.none(), st.lists(st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": st.text(st.characters(blacklist_categories=()))}),
        st.fixed_dictionaries({"type": st.just("file"), "file": st.text()}))),
        st.fixed_dictionaries({"type": st.just("text"), "text": st.text()})),
    "metadata": st.one_of(st.none(), st.fixed_dictionaries({"title": st.text(min_size=1)}), st.just({})),
}), max_size=12), st.text(st.characters(blacklist_categories=())), st.text())
@settings(max_examples=300, deadline=None)
# Found by a CI run: a real message's text inside a {"type": "text"} part, where str() of the part escapes the
# private-use character, so the check took the real text for a display-only bubble's.
@example(history=[{"role": "user", "content": "", "metadata": None},
                  {"role": "user", "content": "0" * 20 + "\ue000", "metadata": {"title": "0"}},
                  {"role": "user", "content": {"type": "text", "text": "0" * 20 + "\ue000"}, "metadata": None}],
         message="", system="")
def test_normaliser_accepts_any_history_and_keeps_only_real_turns(history, message, system):
    out = to_messages(history, message, system)
    for m in out:
        assert m.role in ("system", "user", "assistant")
        assert m.content == clean_text(m.content) and m.content
        m.content.encode("utf-8")  # no lone surrogates survive
    roles = [m.role for m in out]
    assert roles.count("system") <= 1 and (not roles or roles[0] == "system" or "system" not in roles)
    for a, b in zip(out, out[1:]):
        assert not (a.role == b.role == "assistant"), "assistant bubbles are joined"
    titled = [h for h in history if isinstance(h.get("metadata"), dict) and h["metadata"].get("title")]
    real = [t for h in history if h not in titled for t in _texts(h["content"])] + [str(message), str(system)]
    for h in titled:
        text = h["content"]
        if isinstance(text, str) and len(text) > 20 and not any(text in r for r in real):
            assert all(text not in m.content for m in out), "display-only bubbles never reach the model"
