"""Output moderation through the running app (issue 18): gradio_client's /chat stream and /send reply of a reply
that the moderation check flags, and the dashboard's count of it. Fake providers, SQLite."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import sqlalchemy as sa
from gradio_client import Client

from core.store import FLAGGED_ERROR
from storage.models import Message
from tests.apphelpers import app_env, in_process_app
from tests.fakes import Scenario
from tests.test_dashboard import FakeRequest
from ui.dashboard import DashboardHandlers


@pytest.fixture(scope="module")
def app(fake_server, tmp_path_factory):
    db = tmp_path_factory.mktemp("moddb") / "parley.db"
    env = app_env(fake_server, f"sqlite:///{db}", MODERATION="openai", MODERATION_EVERY_CHARS="40")
    with in_process_app(env) as (url, services):
        yield url, services


def texts(messages) -> str:
    return json.dumps(messages)


def assistant_rows(services) -> list[dict]:
    with services.engine.connect() as c:
        m = Message.__table__.c
        return [dict(r) for r in c.execute(sa.select(Message.__table__).where(m.role == "assistant").order_by(m.created_at)).mappings()]


def test_a_flagged_reply_streamed_to_chat_is_replaced_by_the_notice_and_stored_flagged(app, fake_server):
    url, services = app
    name = f"modapp-{uuid.uuid4().hex[:8]}"
    fake_server.set_scenario(name, Scenario(text="FLAGME " + " ".join(f"tail{i}" for i in range(300)), rate=100))
    client = Client(url, verbose=False)
    job = client.submit(message="say it", model=f"openai:{name}", system_prompt="", api_name="/chat")
    streamed = [texts(o) for o in job]
    final = texts(job.result())
    assert "withheld" in final and "harassment" in final
    assert "FLAGME" not in final and "tail" not in final, "the final value holds the notice only"
    first_notice = next(i for i, value in enumerate(streamed) if "withheld" in value)
    assert all("FLAGME" not in v and "tail" not in v for v in streamed[first_notice:]), \
        "once the verdict is in, no value carries the reply's text"
    record = [r for r in fake_server.stream_log if r.model == name][-1]
    fake_server.wait_for(lambda: record.ended is not None, timeout=10)  # the fake sees the hang-up a moment later
    assert record.client_closed and record.tokens_sent < 301, "the flagged reply was stopped"
    [stored] = [r for r in assistant_rows(services) if r["model"] == name]
    assert stored["finish_reason"] == "content_filter" and stored["error"] == f"{FLAGGED_ERROR}: harassment"
    assert "withheld" in stored["content"] and "FLAGME" not in stored["content"]


def test_the_send_api_returns_the_notice_not_the_flagged_text(app, fake_server):
    url, _ = app
    name = f"modapp-{uuid.uuid4().hex[:8]}"
    fake_server.set_scenario(name, Scenario(text="Short and FLAGME flagged."))
    out = Client(url, verbose=False).predict(message="say it", model=f"openai:{name}", api_name="/send")
    assert out["flagged"] is True and out["finish_reason"] == "content_filter"
    assert "withheld" in out["reply"] and "FLAGME" not in json.dumps(out)
    assert out["reply_id"], "it is stored (an API client can branch from it)"


def test_the_dashboard_counts_withheld_replies_as_refused_not_failed(app, fake_server):
    url, services = app
    name = f"modapp-{uuid.uuid4().hex[:8]}"
    fake_server.set_scenario(name, Scenario(text="FLAGME again."))
    fine = f"modapp-{uuid.uuid4().hex[:8]}"
    fake_server.set_scenario(fine, Scenario(text="All good."))
    client = Client(url, verbose=False)
    client.predict(message="one", model=f"openai:{name}", system_prompt="", api_name="/chat")
    client.predict(message="two", model=f"openai:{fine}", system_prompt="", api_name="/chat")
    data = asyncio.run(DashboardHandlers(services).data("Last hour", None, FakeRequest(client.session_hash)))
    rows = {r["Model"]: r for r in data.rows}
    assert rows[name]["Refused (%)"] == 100 and rows[name]["Errors (%)"] == 0
    assert rows[fine]["Refused (%)"] == 0
    assert (data.refused, data.failed) == (1, 0), "counted apart from model errors"
