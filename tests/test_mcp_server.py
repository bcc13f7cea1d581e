"""Parley as an MCP server (PARLEY_MCP=on): the official `mcp` client against the launched app and the fake providers."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from storage.models import Conversation
from tests.apphelpers import app_env, in_process_app
from tests.fakes import Scenario

TOOLS = {"chat", "compare", "leaderboard", "batch"}


@pytest.fixture(scope="module")
def open_app(fake_server, tmp_path_factory):
    db = tmp_path_factory.mktemp("mcpdb") / "parley.db"
    with in_process_app(app_env(fake_server, f"sqlite:///{db}", PARLEY_MCP="on")) as (url, services):
        yield url, services


@pytest.fixture(scope="module")
def auth_app(fake_server, tmp_path_factory):
    """Logins on; bob's budget is 3 calls a minute (his test spends it), alice's is untouched."""
    db = tmp_path_factory.mktemp("mcpauthdb") / "parley.db"
    env = app_env(fake_server, f"sqlite:///{db}", PARLEY_MCP="on", APP_USERS="alice:pw-a,bob:pw-b", RATE_LIMIT="3/minute")
    with in_process_app(env) as (url, services):
        yield url, services


def basic(name: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


def with_session(url: str, fn: Callable[[ClientSession], Awaitable[Any]], headers: dict[str, str] | None = None) -> Any:
    """Run `fn(session)` in a session of the official client over streamable HTTP."""

    async def main() -> Any:
        async with httpx.AsyncClient(headers=headers or {}, timeout=60) as http:
            async with streamable_http_client(f"{url}/gradio_api/mcp/", http_client=http) as (read, write, _):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return await fn(session)

    return asyncio.run(main())


def call(url: str, name: str, args: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    """The tool's result: (isError, its text)."""

    async def fn(session: ClientSession) -> tuple[bool, str]:
        result = await session.call_tool(name, args)
        return bool(result.isError), "".join(getattr(c, "text", "") for c in result.content)

    return with_session(url, fn, headers)


def test_exactly_the_four_tools_are_listed_with_clean_schemas(open_app):
    url, _ = open_app

    async def fn(session: ClientSession) -> Any:
        return (await session.list_tools()).tools

    tools = {t.name: t for t in with_session(url, fn)}
    assert set(tools) == TOOLS  # not the app's /chat, /send, /compare or /leaderboard endpoints
    for t in tools.values():
        assert t.description and "Returns" in t.description
        props = t.inputSchema["properties"]
        assert "request" not in props and "api_key" not in props, "nothing server-side is asked of the caller"
        assert all(p.get("description") for p in props.values()), f"{t.name}: every argument is described"
    chat = tools["chat"].inputSchema
    assert chat["required"] == ["message"] and chat["properties"]["tools"]["type"] == "boolean"
    compare = tools["compare"].inputSchema
    assert set(compare["required"]) == {"message", "models"} and compare["properties"]["models"]["type"] == "array"
    assert set(tools["batch"].inputSchema["required"]) == {"prompts", "models"}
    assert "required" not in tools["leaderboard"].inputSchema


def test_other_endpoints_cannot_be_called_as_tools(open_app):
    url, _ = open_app
    for hidden in ("respond", "api_send", "api_compare", "api_leaderboard"):
        error, text = call(url, hidden, {"message": "hi"})
        assert error and "not in the selected tools" in text


def test_chat_tool_replies_with_usage_and_saves_the_turn(open_app, fake_server):
    url, services = open_app
    fake_server.set_scenario("mcp-chat", Scenario(text="Hello from the fake model.", tokens=6))
    error, text = call(url, "chat", {"message": "hello over MCP", "model": "openai:mcp-chat"})
    assert not error, text
    out = json.loads(text)
    assert out["reply"] == "Hello from the fake model." and out["model"] == "openai:mcp-chat"
    assert out["finish_reason"] == "stop" and out["output_tokens"] > 0 and out["input_tokens"] > 0 and out["conversation_id"]
    sent = [r for r in fake_server.requests if r.model == "mcp-chat"][-1]
    assert sent.headers.get("authorization") == "Bearer test-key", "the server's key was used, and never returned"
    assert "test-key" not in text
    with services.engine.connect() as c:
        conv = c.execute(sa.select(Conversation.__table__).where(Conversation.__table__.c.id == uuid.UUID(out["conversation_id"]))).mappings().one()
    assert conv["owner"].startswith("session:mcp-"), "an anonymous caller gets an owner of its own"


def test_chat_tool_refusal_is_an_error_result(open_app):
    url, _ = open_app
    error, text = call(url, "chat", {"message": "   "})
    assert error and "empty message" in text


def test_compare_tool_plain_and_blind(open_app, fake_server):
    url, _ = open_app
    fake_server.set_scenario("mcp-cmp-a", Scenario(text="Answer A.", tokens=2))
    fake_server.set_scenario("mcp-cmp-b", Scenario(text="Answer B.", tokens=2))
    models = ["openai:mcp-cmp-a", "anthropic:mcp-cmp-b"]
    error, text = call(url, "compare", {"message": "compare us", "models": models})
    assert not error, text
    panes = json.loads(text)["panes"]
    assert [p["model"] for p in panes] == models and [p["text"] for p in panes] == ["Answer A.", "Answer B."]
    assert sorted(p["position"] for p in panes) == [0, 1]

    error, text = call(url, "compare", {"message": "compare us blind", "models": models, "blind": True})
    assert not error, text
    out = json.loads(text)
    assert out["blind"] is True and [p["label"] for p in out["panes"]] == ["Model A", "Model B"]
    assert sorted(p["text"] for p in out["panes"]) == ["Answer A.", "Answer B."]
    assert "mcp-cmp" not in text and "openai" not in text and "anthropic" not in text, "no model is named"


def test_compare_tool_refuses_one_model(open_app):
    url, _ = open_app
    error, text = call(url, "compare", {"message": "x", "models": ["openai:only-one"]})
    assert error and "2 to 4 models" in text


def test_leaderboard_tool(open_app):
    url, _ = open_app
    error, text = call(url, "leaderboard", {})
    assert not error, text
    out = json.loads(text)
    assert out["votes"] == 0 and out["ratings"] == []


def test_batch_tool_scores_replies_against_references(open_app, fake_server):
    url, _ = open_app
    fake_server.set_scenario("mcp-batch", Scenario(text="Paris", tokens=1))
    error, text = call(url, "batch", {"prompts": ["Capital of France?", "Capital of Italy?"], "models": ["openai:mcp-batch"],
                                      "references": ["Paris", "Rome"]})
    assert not error, text
    out = json.loads(text)
    model = out["summary"]["models"]["openai:mcp-batch"]
    assert model["done"] == 2 and model["scored"] == 2 and model["score_mean"] == pytest.approx(0.5)
    assert sorted((r["prompt_id"], r["score"]) for r in out["replies"]) == [("1", 1.0), ("2", 0.0)]


def test_batch_tool_is_capped(open_app):
    url, _ = open_app
    error, text = call(url, "batch", {"prompts": [f"p{i}" for i in range(21)], "models": ["openai:x"]})
    assert error and "at most 20" in text


def test_without_credentials_the_mcp_routes_answer_401(auth_app):
    url, _ = auth_app
    for headers in ({}, basic("alice", "wrong"), {"Authorization": "Bearer pw-a"}):
        r = httpx.post(f"{url}/gradio_api/mcp/", headers={**headers, "Accept": "application/json, text/event-stream"},
                       json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=30)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    with pytest.raises(BaseException) as refused:  # the official client gives up at the 401
        with_session(url, lambda s: s.list_tools())
    assert "401" in repr(refused.value) or "Unauthorized" in repr(refused.value)
    assert httpx.get(f"{url}/gradio_api/mcp/schema", timeout=30).status_code == 401
    assert httpx.get(f"{url}/gradio_api/mcp/sse", timeout=30).status_code == 401  # the SSE transport too


def test_with_credentials_a_call_runs_as_that_user(auth_app, fake_server):
    url, services = auth_app
    fake_server.set_scenario("mcp-alice", Scenario(text="Hi Alice.", tokens=2))
    error, text = call(url, "chat", {"message": "hello as alice", "model": "openai:mcp-alice"}, basic("alice", "pw-a"))
    assert not error, text
    conv_id = json.loads(text)["conversation_id"]
    with services.engine.connect() as c:
        owner = c.execute(sa.select(Conversation.__table__.c.owner).where(Conversation.__table__.c.id == uuid.UUID(conv_id))).scalar_one()
    assert owner == "user:alice", "the same owner as alice's browser login: her conversation is in her sidebar"


def test_the_rate_limit_applies_to_mcp_calls(auth_app, fake_server):
    url, _ = auth_app
    fake_server.set_scenario("mcp-limit", Scenario(text="ok", tokens=1))
    bob = basic("bob", "pw-b")
    results = [call(url, "chat", {"message": f"call {i}", "model": "openai:mcp-limit"}, bob) for i in range(4)]
    assert [e for e, _ in results[:3]] == [False, False, False]
    error, text = results[3]
    assert error and "too fast" in text
    assert len([r for r in fake_server.requests if r.model == "mcp-limit"]) == 3, "the refused call reached no provider"


def test_off_by_default_there_are_no_mcp_routes(fake_server, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_MCP_SERVER", "true")  # Gradio's own switch does not open it either
    with in_process_app(app_env(fake_server, f"sqlite:///{tmp_path / 'p.db'}")) as (url, services):
        assert not services.config.mcp_server
        r = httpx.post(f"{url}/gradio_api/mcp/", headers={"Accept": "application/json, text/event-stream"},
                       json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=30)
        assert r.status_code == 404
        api = httpx.get(f"{url}/gradio_api/info", timeout=30).json()["named_endpoints"]
        assert not any(name.startswith("/mcp_") for name in api), "the tools' endpoints exist only with MCP on"


def test_who_is_calling_without_the_guard_too():
    """The tools check the caller themselves as well (a route in front of Gradio could change)."""
    from core.mcp_tools import RemoteRefused, basic_user, remote_owner

    users = [("alice", "pw-a"), ("bob", "pw:with:colons")]
    assert basic_user(basic("bob", "pw:with:colons")["Authorization"], users) == "bob"
    for header in (None, "", "Basic", "Basic !!!", basic("alice", "pw-b")["Authorization"], "Bearer pw-a",
                   "Basic " + base64.b64encode(b"alice").decode()):
        assert basic_user(header, users) is None
    assert remote_owner(login="carol", authorization=None, users=users) == "user:carol"
    assert remote_owner(login=None, authorization=basic("alice", "pw-a")["Authorization"], users=users) == "user:alice"
    with pytest.raises(RemoteRefused, match="Sign in"):
        remote_owner(login=None, authorization=None, users=users)
    one, two = (remote_owner(login=None, authorization=None, users=[]) for _ in range(2))
    assert one.startswith("session:mcp-") and one != two, "anonymous calls never share an owner"


def test_the_mcp_flag_turns_it_on(monkeypatch):
    import app as app_module

    assert app_module.parse_args(["--mcp"]).mcp and not app_module.parse_args([]).mcp
