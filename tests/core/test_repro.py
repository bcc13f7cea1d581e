"""The reproducibility card (issue 16): stored with every chat reply and compare pane, in the exports, nothing secret.

Real storage (SQLite, and PostgreSQL when TEST_DATABASE_URL is set), the real OpenAI SDK against the fake
server, and the demo provider. The API key and the base URL given to the app must appear nowhere in the
card, the exports or the stored row.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import importlib.metadata
import io
import json
import uuid
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import pytest
import sqlalchemy as sa

from chat.registry import Registry, Settings
from chat.types import Params
from compare.pricing import PriceTable
from core.chat import ChatTurns, Update
from core.compare import Comparisons, PaneInput
from core.compare_export import CSV_COLUMNS, comparison_records, to_csv
from core.config import AppConfig
from core.params import ParamInputs
from core.ratelimit import Identity
from core.repro import CARD_KEYS, card_markdown, card_of
from core.services import Services
from storage import repository as repo

SECRET_KEY = "test-key"  # the fake server's key, so the calls succeed; it must appear nowhere Parley writes
SYSTEM = "Answer in one short line."
SYSTEM_SHA = hashlib.sha256(SYSTEM.encode()).hexdigest()[:16]
OPENAI_SDK = f"openai {importlib.metadata.version('openai')}"


@pytest.fixture
def services(engine: sa.Engine, fake_server: Any) -> Iterator[Services]:
    env = {"OPENAI_API_KEY": SECRET_KEY, "OPENAI_BASE_URL": fake_server.openai_base_url, "RATE_LIMIT": "1000/minute"}
    built = Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env)), engine)
    yield built
    built.close()


def secrets_of(fake_server: Any) -> list[str]:
    """What must never be written: the key, the base URL, and its host:port."""
    url = fake_server.openai_base_url
    return [SECRET_KEY, url, url.split("//", 1)[1].split("/", 1)[0]]


def assert_no_secret(text: str, fake_server: Any) -> None:
    for secret in secrets_of(fake_server):
        assert secret not in text, f"{secret!r} leaked"


def stored_row(services: Services, message_id: Any) -> dict[str, Any]:
    with services.engine.connect() as c:
        row = c.execute(sa.text("select * from message where id = :i"),
                        {"i": message_id if services.engine.dialect.name == "postgresql" else uuid.UUID(str(message_id)).hex})
        return dict(row.mappings().one())


def test_a_chat_reply_keeps_its_card_and_exports_it_without_secrets(services: Services, fake_server: Any) -> None:
    who = f"user:{uuid.uuid4().hex[:8]}"

    async def go() -> list[Any]:
        async with aclosing(ChatTurns(services).send(owner=who, identity=Identity(who), text="hello", model="openai:gpt-test",
                                                     system_prompt=SYSTEM, params=ParamInputs(temperature="0.5"))) as events:
            return [e async for e in events]

    last = asyncio.run(go())[-1]
    assert isinstance(last, Update) and last.result.done and last.saved is not None
    assert last.result.error is None and last.result.text, "the call succeeded"
    detail = asyncio.run(services.db(repo.get_conversation, owner=who, conversation_id=last.conversation_id))
    reply = detail.messages[-1]
    card = card_of(reply)
    assert tuple(card) == CARD_KEYS
    assert card["provider"] == "openai" and card["model"] == "gpt-test"
    assert card["model_version"] == last.result.model_version
    assert card["params"] == {"temperature": 0.5, "max_tokens": 2048}
    assert card["system_prompt_sha256"] == SYSTEM_SHA
    assert card["sdk_version"] == OPENAI_SDK
    # The provider's id where it gives one (the OpenAI provider reads it from x-request-id); never made up.
    assert card["request_id"] == last.result.request_id
    assert card["request_id"] in {r.request_id for r in fake_server.requests}, "the id the server sent (x-request-id)"
    assert card["time"]
    shown = card_markdown(card)
    assert SYSTEM_SHA in shown and OPENAI_SDK in shown
    assert_no_secret(json.dumps(card, default=str) + shown, fake_server)

    row = stored_row(services, reply.id)
    assert (row["request_id"], row["sdk_version"], row["system_prompt_sha256"]) == (
        last.result.request_id, OPENAI_SDK, SYSTEM_SHA)
    assert_no_secret(json.dumps(row, default=str), fake_server)

    exported = asyncio.run(services.db(repo.export_json, owner=who, conversation_id=last.conversation_id))
    assert_no_secret(exported, fake_server)
    (message,) = [m for m in json.loads(exported)["conversations"][0]["messages"] if m["role"] == "assistant"]
    assert (message["request_id"], message["sdk_version"], message["system_prompt_sha256"]) == (
        last.result.request_id, OPENAI_SDK, SYSTEM_SHA)
    # The card comes back with an import, and goes out again the same.
    (copy,) = asyncio.run(services.db(repo.import_json, owner=who, data=exported))
    again = asyncio.run(services.db(repo.get_conversation, owner=who, conversation_id=copy)).messages[-1]
    assert card_of(again) | {"time": None} == card | {"time": None}


def test_compare_panes_keep_their_card_and_the_exports_carry_it_and_the_position(services: Services,
                                                                                fake_server: Any) -> None:
    comparisons = Comparisons(services, PriceTable())
    items = asyncio.run(comparisons.compare(owner="user:ann", request=None, message="Name a prime.",
                                            models=["openai:gpt-test", "demo:parley-demo"], system_prompt=SYSTEM))
    details = asyncio.run(services.db(repo.export_comparisons, owner="user:ann"))
    (record,) = comparison_records(details)
    by_model = {p["model"]: p for p in record["panes"]}
    for item in items:
        assert item["error"] is None, "the calls succeeded"
        pane = by_model[item["model"]]
        assert pane["position"] == item["position"] == pane["slot"]
        assert pane["system_prompt_sha256"] == SYSTEM_SHA
    assert by_model["openai:gpt-test"]["sdk_version"] == OPENAI_SDK
    assert by_model["openai:gpt-test"]["request_id"] in {r.request_id for r in fake_server.requests}
    assert by_model["demo:parley-demo"]["sdk_version"] == "demo"
    assert by_model["demo:parley-demo"]["request_id"] is None  # the demo has no request id: none is invented

    text = to_csv(details)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == CSV_COLUMNS
    assert sorted(int(r["position"]) for r in rows) == [0, 1]
    assert {r["model"]: r["sdk_version"] for r in rows} == {"openai:gpt-test": OPENAI_SDK, "demo:parley-demo": "demo"}
    assert all(r["system_prompt_sha256"] == SYSTEM_SHA for r in rows)
    assert_no_secret(text + json.dumps(record), fake_server)


def test_a_blind_pane_hides_its_card_until_the_vote(services: Services) -> None:
    comparisons = Comparisons(services, PriceTable())
    session: dict[str, Any] = {}
    inputs = [PaneInput("openai:gpt-test", "", None), PaneInput("demo:parley-demo", "", None)]
    panes = comparisons.session_panes(session, inputs, Params(), SYSTEM, blind=True)
    run = comparisons.start("user:bo", "Which is bigger, 2 or 3?", panes, blind=True)
    asyncio.run(run.run())
    (before,) = comparison_records(asyncio.run(services.db(repo.export_comparisons, owner="user:bo")))
    # The SDK names the provider and the hash tells system prompts apart: withheld with the names.
    assert all(p[k] is None for p in before["panes"] for k in ("sdk_version", "request_id", "system_prompt_sha256"))
    asyncio.run(comparisons.vote(owner="user:bo", comparison_id=before["comparison_id"], choice="0", panes=2))
    (after,) = comparison_records(asyncio.run(services.db(repo.export_comparisons, owner="user:bo")))
    assert sorted(p["sdk_version"] for p in after["panes"]) == sorted(["demo", OPENAI_SDK])


def test_batch_rows_carry_the_card_without_secrets(fake_server: Any, tmp_path: Any) -> None:
    from compare.batch import Prompt, run_batch

    env = {"OPENAI_API_KEY": SECRET_KEY, "OPENAI_BASE_URL": fake_server.openai_base_url}

    async def go() -> Any:
        registry = Registry.from_settings(Settings.from_env(env))
        try:
            return await run_batch(registry, [Prompt("q1", "hello"), Prompt("q2", "hi", system="Own system.")],
                                   ["openai:gpt-test", "demo:parley-demo"], out_path=tmp_path / "r.jsonl",
                                   params=Params(max_tokens=64, temperature=0.2), system=SYSTEM)
        finally:
            await registry.aclose()

    summary = asyncio.run(go())
    rows = {(r["prompt_id"], r["model"]): r for r in summary.rows}
    oai = rows[("q1", "openai:gpt-test")]
    assert all(r["error"] is None for r in summary.rows), "the calls succeeded"
    assert oai["sdk_version"] == OPENAI_SDK and oai["system_prompt_sha256"] == SYSTEM_SHA
    assert oai["params"] == {"max_tokens": 64, "temperature": 0.2}
    assert rows[("q2", "openai:gpt-test")]["system_prompt_sha256"] == hashlib.sha256(b"Own system.").hexdigest()[:16]
    demo = rows[("q1", "demo:parley-demo")]
    assert demo["sdk_version"] == "demo" and demo["request_id"] is None and demo["model_version"] == "demo/parley-demo"
    # The id the server sent (x-request-id), never one made up.
    assert oai["request_id"] in {r.request_id for r in fake_server.requests}
    assert_no_secret((tmp_path / "r.jsonl").read_text(encoding="utf-8"), fake_server)


def test_the_users_comparisons_export_as_an_experiment_file(services: Services, tmp_path: Any) -> None:
    from compare.experiment import ExperimentError, dumps, loads
    from core.experiment import describe, open_file

    comparisons = Comparisons(services, PriceTable())
    items = asyncio.run(comparisons.compare(owner="user:cy", request=None, message="Name a prime.",
                                            models=["openai:gpt-test", "demo:parley-demo"], system_prompt=SYSTEM))
    record = comparison_records(asyncio.run(services.db(repo.export_comparisons, owner="user:cy")))[0]
    asyncio.run(comparisons.vote(owner="user:cy", comparison_id=record["comparison_id"], choice="1", panes=2))
    name, text = asyncio.run(comparisons.export(owner="user:cy", fmt="experiment"))
    assert name.endswith(".experiment.json")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    doc = open_file(str(path), 10_000_000)
    assert dumps(doc).decode() == text, "byte-identical after reading"
    (run,) = doc["comparisons"]
    assert run["vote"]["verdict"] == "slot" and run["vote"]["winner_slot"] == 1
    assert sorted((p["model"], p["position"]) for p in run["panes"]) == sorted((i["model"], i["position"]) for i in items)
    assert all(p["system_prompt_sha256"] == SYSTEM_SHA and p["sdk_version"] for p in run["panes"])
    assert "1 comparison(s)" in describe(doc)
    forged = json.loads(text)
    forged["comparisons"][0]["vote"]["winner_slot"] = 0
    with pytest.raises(ExperimentError, match="comparisons section"):
        loads(dumps(forged))
