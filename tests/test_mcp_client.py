"""MCP servers' tools inside Parley: a FastMCP server the tests start (stdio and streamable HTTP), declared in
models.toml, called by the fake provider's models in a chat; a server that cannot start, and one killed mid-chat."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import sqlalchemy as sa
from gradio_client import Client

from chat.tools.mcp_config import read_mcp_file
from storage.models import Message
from tests.apphelpers import ROOT, app_env, free_port, in_process_app
from tests.fakes import Scenario

TOKEN_VAR = "PARLEY_TEST_MCP_TOKEN"


def wait_for(check, timeout: float = 60.0, what: str = "") -> None:
    """Poll until `check()` is true (a bound only a hang reaches, never a speed check)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def http_server():
    """The test MCP server over streamable HTTP, as its own process."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.mcp_tools", "http", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/mcp"

    def up() -> bool:
        try:
            httpx.get(url, timeout=1)
            return True
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, what="the MCP test server")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


@pytest.fixture(scope="module")
def app(fake_server, http_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mcpclient")
    toml = folder / "models.toml"
    toml.write_text(f"""
[[mcp_servers]]
name = "local"
command = {json.dumps(sys.executable)}
args = ["-m", "tests.fakes.mcp_tools", "stdio"]
cwd = {json.dumps(str(ROOT))}
timeout = 20
tools = ["add", "whoami", "fail"]

[[mcp_servers]]
name = "web"
url = "{http_server}"
headers = {{ "Authorization" = "env:{TOKEN_VAR}" }}

[[mcp_servers]]
name = "broken"
command = "/nonexistent/parley-mcp-server"
timeout = 5
""", encoding="utf-8")
    old = os.environ.get(TOKEN_VAR)
    os.environ[TOKEN_VAR] = "Bearer s3cret"  # read from the environment, as the TOML says
    env = app_env(fake_server, f"sqlite:///{folder / 'parley.db'}", PARLEY_MODELS_FILE=str(toml))
    try:
        with in_process_app(env) as (url, services):
            hub = services.mcp
            hub.wait_ready(60.0)  # every server connected or failed (the hub's own wait)
            wait_for(lambda: all(c.session is not None for c in hub.connections if c.name != "broken"), what="local and web")
            yield url, services
    finally:
        if old is None:
            os.environ.pop(TOKEN_VAR, None)
        else:
            os.environ[TOKEN_VAR] = old


def send(url: str, model: str, message: str) -> dict:
    return Client(url, verbose=False).predict(message=message, model=model, tools=True, api_name="/send")


def stored_calls(services, reply_id: str) -> list[dict]:
    with services.engine.connect() as c:
        calls = c.execute(sa.select(Message.__table__.c.tool_calls).where(Message.__table__.c.id == uuid.UUID(reply_id))).scalar_one()
    return calls if isinstance(calls, list) else json.loads(calls)


def test_settings_read_the_servers_and_report_bad_ones(tmp_path):
    toml = tmp_path / "models.toml"
    toml.write_text("""
[[mcp_servers]]
name = "ok"
url = "http://localhost:9/mcp"
headers = { "Authorization" = "env:MCP_T", "X-Plain" = "plain" }
tools = ["a"]

[[mcp_servers]]
name = "both"
command = "x"
url = "http://localhost:9/mcp"

[[mcp_servers]]
name = "nokey"
url = "http://localhost:9/mcp"
headers = { "Authorization" = "env:MCP_MISSING" }

[[mcp_servers]]
name = "ok"
command = "y"
""", encoding="utf-8")
    servers, problems = read_mcp_file(toml, {"MCP_T": "Bearer t"})
    assert [s.name for s in servers] == ["ok"]
    assert servers[0].headers == {"Authorization": "Bearer t", "X-Plain": "plain"} and servers[0].tools == ("a",)
    assert "Bearer t" not in repr(servers[0]), "a token is never in a repr (logs)"
    assert len(problems) == 3
    assert "not both" in problems[0] and "MCP_MISSING" in problems[1] and "used twice" in problems[2]


def test_their_tools_are_listed_beside_the_built_in_ones(app):
    _, services = app
    names = services.toolbox.names
    assert {"calculator", "current_time", "search_conversations"} <= set(names)
    assert {"local__add", "local__whoami", "local__fail", "web__add", "web__shout", "web__whoami"} <= set(names)
    assert "local__shout" not in names, "the `tools` filter of the table holds"
    assert not any(n.startswith("broken__") for n in names)
    spec = next(s for s in services.toolbox.specs() if s.name == "local__add")
    assert spec.parameters["properties"].keys() == {"a", "b"} and spec.parameters["required"] == ["a", "b"]
    assert "title" not in json.dumps(spec.parameters)
    assert "Add two integers." in spec.description
    # The sidebar's tools switch says that these servers' tools come with it.
    switch = next(b for b in services.demo.blocks.values() if getattr(b, "elem_id", None) == "use-tools")
    assert "MCP servers" in switch.info


def test_a_chat_calls_a_stdio_tool_and_stores_the_call(app, fake_server):
    url, services = app
    fake_server.set_scenario("mcp-add", Scenario(tool_calls=[{"name": "local__add", "arguments": {"a": 2, "b": 40}}],
                                                 then=Scenario(text="It is 42.", tokens=3)))
    out = send(url, "openai:mcp-add", "add 2 and 40")
    assert out["reply"].endswith("It is 42.")
    calls = stored_calls(services, out["reply_id"])
    assert calls[0]["name"] == "local__add" and calls[0]["result"] == "42" and calls[0]["error"] is None
    second = [r for r in fake_server.requests if r.model == "mcp-add"][-1]
    assert "42" in json.dumps(second.json), "the result went back to the model"
    # The server that could not start is said with the reply; the chat went on.
    assert any("'broken' is unavailable" in n and "FileNotFoundError" in n for n in out["notes"])


def test_an_http_tool_gets_the_header_from_the_environment(app, fake_server):
    url, services = app
    fake_server.set_scenario("mcp-who", Scenario(tool_calls=[{"name": "web__whoami", "arguments": {}}],
                                                 then=Scenario(text="Done.", tokens=1)))
    out = send(url, "anthropic:mcp-who", "who am I")
    assert stored_calls(services, out["reply_id"])[0]["result"] == "Bearer s3cret"


def test_a_tool_error_goes_back_to_the_model(app, fake_server):
    url, services = app
    fake_server.set_scenario("mcp-fail", Scenario(tool_calls=[{"name": "local__fail", "arguments": {"reason": "test"}}],
                                                  then=Scenario(text="It failed.", tokens=2)))
    out = send(url, "openai:mcp-fail", "fail please")
    call = stored_calls(services, out["reply_id"])[0]
    assert call["result"] is None and "failed on purpose: test" in call["error"]
    assert out["reply"].endswith("It failed.")


def test_a_server_killed_mid_chat_gives_a_clear_error_and_comes_back(app, fake_server):
    url, services = app
    fake_server.set_scenario("mcp-pid", Scenario(tool_calls=[{"name": "local__whoami", "arguments": {}}],
                                                 then=Scenario(text="Got it.", tokens=2)))
    out = send(url, "openai:mcp-pid", "which process")
    pid = int(stored_calls(services, out["reply_id"])[0]["result"].split()[-1])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _alive(pid), what="the server to die")

    fake_server.set_scenario("mcp-dead", Scenario(tool_calls=[{"name": "local__add", "arguments": {"a": 1, "b": 1}}],
                                                  then=Scenario(text="The tool is down, sorry.", tokens=5)))
    out = send(url, "openai:mcp-dead", "add 1 and 1")
    call = stored_calls(services, out["reply_id"])[0]
    assert "The MCP server 'local' stopped answering" in call["error"]
    assert out["reply"].endswith("The tool is down, sorry."), "the chat went on"

    # Restarted in the background: a later message can use it again, from a new process.
    local = next(c for c in services.mcp.connections if c.name == "local")
    wait_for(lambda: local.session is not None, what="the restart")
    out = send(url, "openai:mcp-pid", "which process now")
    assert int(stored_calls(services, out["reply_id"])[0]["result"].split()[-1]) != pid


def test_closing_the_app_stops_the_stdio_server(fake_server, tmp_path):
    toml = tmp_path / "models.toml"
    toml.write_text(f"""
[[mcp_servers]]
name = "solo"
command = {json.dumps(sys.executable)}
args = ["-m", "tests.fakes.mcp_tools", "stdio"]
cwd = {json.dumps(str(ROOT))}
""", encoding="utf-8")
    env = app_env(fake_server, f"sqlite:///{tmp_path / 'p.db'}", PARLEY_MODELS_FILE=str(toml))
    with in_process_app(env) as (_, services):
        hub = services.mcp
        wait_for(lambda: hub.connections[0].session is not None, what="the server")
        tool = services.toolbox.get("solo__whoami")
        import asyncio

        pid = int(asyncio.run(tool.run("{}")).split()[-1])
        assert _alive(pid)
    wait_for(lambda: not _alive(pid), timeout=15, what="the server to stop with the app")


def test_an_http_server_that_dies_ends_the_call_with_a_clear_error():
    """The session's end is noticed at once: the call does not wait for its timeout (60 s here) to fail."""
    import asyncio

    from chat.tools import ToolError
    from chat.tools.mcp import McpHub
    from chat.tools.mcp_config import McpServer

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.mcp_tools", "http", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    hub = McpHub([McpServer(name="w", url=f"http://127.0.0.1:{port}/mcp", timeout=60)])
    try:
        def up() -> bool:
            try:
                httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
                return True
            except httpx.HTTPError:
                return False

        wait_for(up, what="the MCP test server")
        hub.start()
        wait_for(lambda: hub.connections[0].session is not None, what="the connection")
        add = next(t for t in hub.tools() if t.name == "w__add")
        assert asyncio.run(add.run('{"a": 1, "b": 2}')) == "3"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        with pytest.raises(ToolError) as failed:
            asyncio.run(add.run('{"a": 1, "b": 2}'))
        assert "The MCP server 'w' stopped answering" in str(failed.value)
        assert "ConnectError" in str(failed.value)
        assert any("'w' is unavailable" in n for n in hub.notices()), "the next replies say so"
    finally:
        hub.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
