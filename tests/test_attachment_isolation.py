"""Uploads and attachments reach only their caller: ui/files.py's FileGuard, alone and in the launched app.

Gradio serves every file of its upload folder to anyone with the URL; the guard answers 404 to
anyone but the caller a file was uploaded by or shown to, and refuses a request that names
someone else's file as an input.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.apphelpers import app_env, in_process_app
from tests.gradio_raw import RawGradio
from ui.files import AttachmentFiles, FileGrants, FileGuard, file_key
from ui.session_guard import COOKIE

ALICE = ("alice", "wonderland")
BOB = ("bob", "builder")


def png_bytes(color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(out, "PNG")
    return out.getvalue()


# -- the middleware alone, against a stand-in for Gradio ---------------------------------------------


class Recorder:
    """A stand-in ASGI app: records what reached it; answers an upload, an event stream or a file."""

    def __init__(self, upload_answer: bytes = b"[]", stream: list[bytes] | None = None):
        self.reached: list[str] = []
        self.upload_answer = upload_answer
        self.stream = stream or []

    async def __call__(self, scope, receive, send):
        self.reached.append(scope["path"])
        if scope["path"].endswith("/upload"):
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": self.upload_answer})
        elif scope["path"].endswith("/queue/data"):
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
            for chunk in self.stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"image/png")]})
            await send({"type": "http.response.body", "body": b"the file"})


def scope(path: str, method: str = "GET", browser: str | None = None, client: str = "10.0.0.1") -> dict:
    headers = [(b"cookie", f"{COOKIE}={browser}".encode())] if browser else []
    return {"type": "http", "method": method, "path": path, "headers": headers, "client": (client, 5000), "query_string": b""}


async def call(app, s: dict, body: bytes = b"") -> tuple[int, bytes]:
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await app(s, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


A, B = "a" * 24, "b" * 24  # two browsers' cookies


@pytest.fixture
def root(tmp_path) -> Path:
    folder = tmp_path / "gradio"
    (folder / "abc").mkdir(parents=True)
    (folder / "abc" / "chart.png").write_bytes(png_bytes())
    return folder.resolve()


async def test_an_upload_answers_its_uploader_only(root):
    path = str(root / "abc" / "chart.png")
    inner = Recorder(upload_answer=json.dumps([path]).encode())
    guard = FileGuard(inner, FileGrants(), root)
    assert (await call(guard, scope("/gradio_api/upload", "POST", browser=A)))[0] == 200

    assert await call(guard, scope(f"/gradio_api/file={path}", browser=A)) == (200, b"the file")
    assert (await call(guard, scope(f"/gradio_api/file={path}", "HEAD", browser=A)))[0] == 200
    # Another browser, a client with no cookie (even from the same address), the deprecated route,
    # and the same file spelled another way all get the same 404, and Gradio never sees them.
    before = len(inner.reached)
    assert await call(guard, scope(f"/gradio_api/file={path}", browser=B)) == (404, b'{"detail":"Not found"}')
    assert (await call(guard, scope(f"/gradio_api/file={path}")))[0] == 404
    assert (await call(guard, scope(f"/gradio_api/file/{path}", browser=B)))[0] == 404
    assert (await call(guard, scope(f"/gradio_api/file={root}/abc/../abc/chart.png", browser=B)))[0] == 404
    assert (await call(guard, scope(f"/gradio_api/file={root}/abc/../abc/chart.png", browser=A)))[0] == 200
    assert len(inner.reached) == before + 1


async def test_a_file_nobody_was_given_answers_nobody_and_other_files_are_gradios_business(root, tmp_path):
    guard = FileGuard(Recorder(), FileGrants(), root)
    assert (await call(guard, scope(f"/gradio_api/file={root}/abc/chart.png", browser=A)))[0] == 404
    # Outside the upload folder (static files, allowed paths) Gradio's own checks apply.
    assert (await call(guard, scope(f"/gradio_api/file={tmp_path}/elsewhere.txt", browser=A)))[0] == 200


async def test_a_file_in_an_event_stream_is_granted_to_that_stream_only_even_when_split(root):
    path = str(root / "abc" / "chart.png")
    event = json.dumps({"msg": "process_completed", "output": {"data": [[
        {"role": "user", "content": [{"file": {"path": path, "url": f"/gradio_api/file={path}",
                                               "meta": {"_type": "gradio.FileData"}}, "type": "file"}]}]]}}).encode()
    message = b"data: " + event + b"\n\n"
    inner = Recorder(stream=[message[:40], message[40:]])  # the mark itself is cut in two
    guard = FileGuard(inner, FileGrants(), root)
    await call(guard, scope("/gradio_api/queue/data", browser=A))
    assert (await call(guard, scope(f"/gradio_api/file={path}", browser=A)))[0] == 200
    assert (await call(guard, scope(f"/gradio_api/file={path}", browser=B)))[0] == 404


async def test_a_model_reply_that_quotes_the_mark_grants_nothing(root):
    path = str(root / "abc" / "chart.png")
    quoted = json.dumps({"path": path, "meta": {"_type": "gradio.FileData"}})
    event = json.dumps({"msg": "process_generating", "output": {"data": [[["append", [1, "content"], quoted]]]}}).encode()
    guard = FileGuard(Recorder(stream=[b"data: " + event + b"\n\n"]), FileGrants(), root)
    await call(guard, scope("/gradio_api/queue/data", browser=B))
    assert (await call(guard, scope(f"/gradio_api/file={path}", browser=B)))[0] == 404


async def test_a_request_naming_someone_elses_file_is_refused_before_gradio(root):
    path = str(root / "abc" / "chart.png")
    grants = FileGrants()
    grants.grant(path, f"browser:{A}")
    inner = Recorder()
    guard = FileGuard(inner, grants, root)
    body = json.dumps({"data": [{"text": "describe", "files": [{"path": path, "meta": {"_type": "gradio.FileData"}}]}],
                       "fn_index": 3, "session_hash": "s1"}).encode()
    status, answer = await call(guard, scope("/gradio_api/queue/join", "POST", browser=B), body)
    assert status == 403 and b"not uploaded or shown to you" in answer
    assert inner.reached == []
    # The same request from its owner goes through, body intact; so does one that names no file.
    assert (await call(guard, scope("/gradio_api/queue/join", "POST", browser=A), body))[0] == 200
    assert (await call(guard, scope("/gradio_api/queue/join", "POST", browser=B), b'{"data": ["hi"]}'))[0] == 200
    assert len(inner.reached) == 2


def test_the_grant_table_is_bounded():
    grants = FileGrants(capacity=3)
    for i in range(5):
        grants.grant(f"/tmp/gradio/x/{i}.png", "browser:a")
    assert len(grants) == 3
    assert file_key("/tmp/gradio/x/../x/4.png") == file_key("/tmp/gradio/x/4.png")


def test_attachment_files_are_per_owner_and_unguessable(tmp_path):
    store = AttachmentFiles(tmp_path / "att")
    alice = store.write("user:alice", "id-1", "chart.png", b"png")
    bob = store.write("user:bob", "id-1", "chart.png", b"png")
    assert alice != bob and alice.name == "chart.png" and alice.read_bytes() == b"png"
    assert store.has("user:alice", "id-1", "chart.png") == alice
    assert store.has("user:carol", "id-1", "chart.png") is None
    assert AttachmentFiles(tmp_path / "att").path_for("user:alice", "id-1", "chart.png") != alice  # keyed per process


# -- the launched app -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def anon_app(fake_server, tmp_path_factory):
    db = tmp_path_factory.mktemp("filesdb") / "parley.db"
    with in_process_app(app_env(fake_server, f"sqlite:///{db}")) as (url, services):
        yield url, services


@pytest.fixture(scope="module")
def auth_app(fake_server, tmp_path_factory):
    db = tmp_path_factory.mktemp("filesauthdb") / "parley.db"
    with in_process_app(app_env(fake_server, f"sqlite:///{db}", APP_USERS="alice:wonderland,bob:builder")) as (url, services):
        yield url, services


def upload(raw: RawGradio, name: str, data: bytes) -> str:
    r = raw.http.post("/gradio_api/upload", files={"files": (name, data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    return r.json()[0]


def test_logged_in_users_and_anonymous_clients_cannot_fetch_alices_upload(auth_app):
    url, _ = auth_app
    alice, bob = RawGradio(url, auth=ALICE), RawGradio(url, auth=BOB)
    path = upload(alice, "secret-chart.png", png_bytes("blue"))
    assert alice.http.get(f"/gradio_api/file={path}").content == png_bytes("blue")
    assert bob.http.get(f"/gradio_api/file={path}").status_code == 404
    anonymous = httpx.get(f"{url}/gradio_api/file={path}")
    assert anonymous.status_code in (401, 404) and anonymous.content != png_bytes("blue")


def test_anonymous_browsers_cannot_fetch_each_others_uploads(anon_app):
    url, _ = anon_app
    one, two = RawGradio(url), RawGradio(url)
    path = upload(one, "chart.png", png_bytes("green"))
    assert one.http.get(f"/gradio_api/file={path}").status_code == 200
    assert two.http.get(f"/gradio_api/file={path}").status_code == 404
    assert httpx.get(f"{url}/gradio_api/file={path}").status_code == 404  # no cookie, same address
    # The same bytes uploaded by the other browser land on the same path: now it may fetch them too.
    assert upload(two, "chart.png", png_bytes("green")) == path
    assert two.http.get(f"/gradio_api/file={path}").status_code == 200


def test_bob_cannot_send_alices_upload_to_a_model_as_his_own(auth_app, fake_server):
    url, _ = auth_app
    alice, bob = RawGradio(url, auth=ALICE), RawGradio(url, auth=BOB)
    path = upload(alice, "payslip.png", png_bytes("white"))
    before = len(fake_server.requests)
    file_value = {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": "payslip.png"}
    r = bob.http.post("/gradio_api/queue/join", json={
        "data": [{"text": "describe this", "files": [file_value]}, "openai:gpt-4o-mini"],
        "fn_index": bob.fn_index("chat"), "session_hash": bob.session_hash, "event_data": None, "trigger_id": None})
    assert r.status_code == 403
    assert len(fake_server.requests) == before


def test_a_file_value_outside_the_upload_folder_reads_nothing_of_the_servers(anon_app, fake_server):
    """Gradio refuses a file value outside its upload folder (marked or not); the chat handler refuses one too,
    for callers that reach it some other way (a later Gradio, a direct call)."""
    import asyncio

    from ui.chat import ChatHandler

    url, services = anon_app
    raw = RawGradio(url)
    before = len(fake_server.requests)
    dep = next(d for d in raw.config["dependencies"] if d.get("api_name") == "chat")
    defaults = [raw.components[cid].get("props", {}).get("value") for cid in dep["inputs"][1:]]
    for value in ({"path": "/etc/passwd"}, {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}):
        done = raw.call("chat", [{"text": "what is in this file?", "files": [value]}, *defaults])
        assert done["success"] is False and "root:" not in json.dumps(done)

    async def direct() -> list:
        return [out async for out in ChatHandler(services).respond({"text": "what is in it?", "files": ["/etc/passwd"]}, [], "openai:gpt-test")]

    outputs = asyncio.run(direct())
    assert "not an upload" in json.dumps([str(b.content) for b in outputs[-1][0]])
    assert len(fake_server.requests) == before
