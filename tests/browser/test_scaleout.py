"""Scale-out: two Parley processes on one PostgreSQL and one Redis, with nginx in front."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from gradio_client import Client

from tests.apphelpers import AppProcess, app_env, free_port
from tests.browser.test_chat_browser import bot_text, send, wait_ready, wait_until
from tests.gradio_raw import RawGradio

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ALICE = ("alice", "wonderland")


def answer(messages) -> str:
    return "".join(m["content"] for m in messages if not (m.get("metadata") or {}).get("title"))


@pytest.fixture(scope="module")
def cluster(fake_server, tmp_path_factory):
    base, redis_url = os.environ.get("TEST_DATABASE_URL"), os.environ.get("TEST_REDIS_URL")
    if not base or not redis_url:
        pytest.skip("needs TEST_DATABASE_URL and TEST_REDIS_URL (a shared PostgreSQL and Redis)")
    name = "parley_scaleout_" + uuid.uuid4().hex[:8]
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    db = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    prefix = "parley-" + uuid.uuid4().hex[:6]
    env = app_env(fake_server, db, REDIS_URL=redis_url, RATE_LIMIT="5/minute", APP_USERS="alice:wonderland,carol:carolpw",
                  PARLEY_RATE_PREFIX=prefix)
    # Both start at once (each start is seconds of imports on one core; the machine has two).
    a, b = AppProcess(env), AppProcess(env)
    try:
        a.spawn()
        b.spawn()
        a.wait_ready()
        b.wait_ready()
        yield a, b, db
    finally:
        for p in (a, b):
            p.stop()
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_conversation_saved_through_one_replica_is_listed_and_continued_through_the_other(cluster, fake_server, browser):
    a, b, db = cluster
    first = Client(a.url, auth=ALICE, verbose=False).predict(
        message="started on replica A", model="openai:echo", system_prompt="", api_name="/chat")
    assert "started on replica A" in answer(first)
    engine = sa.create_engine(db)
    with engine.connect() as c:
        conv_id = str(c.execute(sa.text("select id from conversation")).scalar_one())

    on_b = RawGradio(b.url, auth=ALICE)
    try:
        assert conv_id in str(on_b.call("list_choices", [None, ""])), "B lists the conversation A saved"
    finally:
        on_b.close()

    # Continue on B as a person would: log in, open it from the sidebar, send a follow-up.
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(20_000)
    page.goto(b.url)
    page.get_by_label("username").fill(ALICE[0])
    page.get_by_label("password").fill(ALICE[1])
    page.get_by_role("button", name="Login").click()
    wait_ready(page)
    page.locator("#conv-list label", has_text="started on replica A").click()
    wait_until(lambda: "You said: started on replica A" in bot_text(page), what="A's conversation opened on B")
    send(page, "continued on replica B")
    wait_until(lambda: "You said: continued on replica B" in bot_text(page), what="B's reply")
    ctx.close()

    def stored():
        with engine.connect() as c:
            return c.execute(sa.text("select conversation_id, position, role, content from message order by position")).mappings().all()

    # B saves the turn as the reply ends (the last update can reach the page first): wait for it, then check it.
    try:
        wait_until(lambda: len(stored()) >= 4, what="B's turn saved")
    except AssertionError:
        pass  # the assertions below say what is missing
    rows = stored()
    assert {str(r["conversation_id"]) for r in rows} == {conv_id}, "one conversation across both replicas"
    assert [r["position"] for r in rows] == [0, 1, 2, 3]
    echo = [r for r in fake_server.requests if r.model == "echo" and "continued on replica B" in str(r.json)][-1]
    assert "started on replica A" in str(echo.json), "B sent the whole history to the model"
    engine.dispose()


def test_a_users_rate_limit_is_shared_by_both_replicas(cluster):
    a, b, _ = cluster
    ca, cb = Client(a.url, auth=ALICE, verbose=False), Client(b.url, auth=ALICE, verbose=False)
    replies = []
    for i in range(8):
        client = ca if i % 2 == 0 else cb
        replies.append(str(client.predict(message=f"turn {i}", model="openai:gpt-test", system_prompt="", api_name="/chat")))
    limited = [i for i, r in enumerate(replies) if "too fast" in r]
    assert limited, "the limit (5/minute, earlier turns included) was reached across the two replicas"
    assert any(i % 2 == 0 for i in limited) and any(i % 2 == 1 for i in limited), "both replicas enforce the shared count"


@pytest.fixture(scope="module")
def nginx(cluster, tmp_path_factory):
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not exe:
        pytest.skip("nginx is not installed (Debian package nginx-light)")
    a, b, _ = cluster
    prefix = tmp_path_factory.mktemp("nginx")
    port = free_port()
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    for key, value in {"PREFIX": str(prefix), "PORT": port, "PORT_A": a.port, "PORT_B": b.port}.items():
        conf = conf.replace("{{" + key + "}}", str(value))
    (prefix / "nginx.conf").write_text(conf)
    proc = subprocess.Popen([exe, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(url + "/gradio_api/info", timeout=2)
            break
        except httpx.HTTPError as e:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"nginx did not start: {proc.stdout.read().decode(errors='replace') if proc.stdout else ''}") from e
            time.sleep(0.2)
    yield url, {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}
    proc.terminate()
    proc.wait(10)


def test_nginx_spreads_clients_and_keeps_each_on_its_replica(nginx):
    url, upstreams = nginx
    seen = set()
    for _ in range(24):
        node = uuid.uuid4().hex
        hits = {httpx.get(url + "/gradio_api/info", cookies={"parley_node": node}, auth=None).headers["x-parley-upstream"] for _ in range(3)}
        assert len(hits) == 1, "one client, one replica"
        seen |= hits
    assert seen == upstreams, "clients are spread over both replicas"


def test_chat_streams_through_nginx(nginx):
    url, _ = nginx
    client = Client(url, auth=("carol", "carolpw"), verbose=False)  # alice used up her limit above
    job = client.submit(message="through the proxy", model="openai:slow", system_prompt="", api_name="/chat")
    outputs = [answer(o) for o in job]
    assert len([o for o in outputs if o]) >= 2, "several streamed updates arrived through nginx"
    assert answer(job.result()).split()[-1]
