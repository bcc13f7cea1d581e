"""The experiment file (issue 16): export → import → export is byte-identical, a tampered file is refused, and a
replay on the demo provider gives the same outputs (the diff shows no change). The CLI (`python -m compare.batch
--experiment`, `python -m compare.experiment replay`) and the Batch tab's handlers, on the real demo provider."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
import sqlalchemy as sa

from chat.registry import Registry, Settings
from chat.types import Params
from compare.batch import load_prompts, run_batch
from compare.batch_cli import main as batch_main
from compare.experiment import ExperimentError, build, diff, dumps, loads, prompts_of, summary_doc
from compare.experiment_cli import main as experiment_main
from core.config import AppConfig
from core.services import Services
from storage.db import init_db, make_engine
from ui.batch import build_batch_tab
from ui.context import TabContext

PROMPTS = [
    {"id": "q1", "prompt": "What is 6 × 7? Answer with the number.", "reference": "42"},
    {"id": "q2", "prompt": "Say hello.", "system": "Be brief.",
     "checks": [{"type": "contains", "value": "hello", "ignore_case": True}, {"type": "regex", "pattern": "^H"},
                {"type": "number", "value": 3.5, "tolerance": 0.5}, {"type": "json_schema", "schema": {"type": "object"}}]},
]
MODELS = ["demo:parley-demo", "demo:reasoning-demo"]


def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """One demo run's experiment file, made through the library as the tab and the CLI make it."""
    tmp = tmp_path_factory.mktemp("experiment")
    prompts = load_prompts(prompts_file(tmp))

    async def go() -> Any:
        registry = Registry.from_settings(Settings.from_env({}))
        try:
            return await run_batch(registry, prompts, MODELS, out_path=tmp / "r.jsonl", params=Params(max_tokens=300),
                                   system="You are terse.")
        finally:
            await registry.aclose()

    summary = asyncio.run(go())
    doc = build(prompts=prompts, models=MODELS, params=Params(max_tokens=300).model_dump(exclude_none=True),
                system="You are terse.", rows=summary.rows, summary=summary_doc(summary), concurrency=4)
    return dumps(doc)


def test_export_import_export_is_byte_identical(experiment: bytes) -> None:
    doc = loads(experiment)
    assert dumps(doc) == experiment
    assert dumps(loads(dumps(doc))) == experiment
    # What the file holds: prompts with their checks as given, settings, outputs with their card, a manifest.
    assert [p["id"] for p in doc["prompts"]] == ["q1", "q2"]
    assert doc["prompts"][1]["checks"] == PROMPTS[1]["checks"] and doc["prompts"][0]["reference"] == "42"
    assert [p.checks for p in prompts_of(doc)] == [p.checks for p in load_prompts(experiment_prompts_bytes(), name="p.jsonl")]
    assert doc["settings"]["models"] == MODELS and doc["settings"]["params"] == {"max_tokens": 300}
    assert len(doc["results"]) == 4 and all(r["text"] and r["sdk_version"] == "demo" for r in doc["results"])
    assert {r["system_prompt_sha256"] for r in doc["results"] if r["prompt_id"] == "q1"} != \
        {r["system_prompt_sha256"] for r in doc["results"] if r["prompt_id"] == "q2"}, "q2 has its own system prompt"
    m = doc["manifest"]
    assert m["schema_version"] == 1 and m["app_version"] == "2.0.0" and set(m["sections"]) >= {"prompts", "results"}
    assert len(m["outputs"]) == 4 and doc["judges"] is None and doc["comparisons"] == []
    assert experiment.endswith(b"\n") and experiment.count(b"\n") == 1 and b'": ' not in experiment[:40]


def experiment_prompts_bytes() -> bytes:
    return "".join(json.dumps(p) + "\n" for p in PROMPTS).encode()


@pytest.mark.parametrize("tamper, says", [
    (lambda d: d["results"][0].update(text=d["results"][0]["text"] + "!"), "results section"),
    (lambda d: d["settings"].update(system="Something else."), "settings section"),
    (lambda d: d["prompts"][0].update(prompt="Another question"), "prompts section"),
    (lambda d: d["manifest"]["outputs"][1].update(sha256="0" * 64), "does not match its sha256"),
    (lambda d: d["manifest"].update(schema_version=99), "schema version 99"),
    (lambda d: d.update(extra=1), "no manifest covers"),
    (lambda d: d.update(format="something"), "not an experiment file"),
])
def test_a_tampered_file_is_refused(experiment: bytes, tamper: Any, says: str) -> None:
    doc = json.loads(experiment)
    tamper(doc)
    with pytest.raises(ExperimentError, match=says):
        loads(dumps(doc))


def test_an_output_changed_with_its_section_hash_still_fails_its_own_hash(experiment: bytes) -> None:
    from compare.experiment import sha256_of

    doc = json.loads(experiment)
    doc["results"][2]["text"] = "forged"
    doc["manifest"]["sections"]["results"] = sha256_of(doc["results"])
    with pytest.raises(ExperimentError, match="prompt 'q2' by demo:parley-demo"):
        loads(dumps(doc))
    with pytest.raises(ExperimentError, match="not valid JSON"):
        loads(experiment[:-10])


def test_cli_writes_the_file_and_a_replay_on_the_demo_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's is read
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    prompts = prompts_file(tmp_path)
    assert batch_main([str(prompts), "--models", ",".join(MODELS), "--out", "r.jsonl", "--system", "Terse.",
                       "--experiment", "e.json"]) in (0, 1)
    first = (tmp_path / "e.json").read_bytes()
    assert loads(first)["settings"]["system"] == "Terse."
    capsys.readouterr()
    assert experiment_main(["replay", "e.json", "--out", "new.json", "--diff", "d.json"]) == 0
    assert "4 pair(s): 4 unchanged, 0 changed" in capsys.readouterr().out
    d = json.loads((tmp_path / "d.json").read_text())
    assert d["changed"] == 0 and all(r["unchanged"] and r["old_text"] == r["new_text"] for r in d["rows"])
    new = loads((tmp_path / "new.json").read_bytes())
    assert [r["text"] for r in new["results"]] == [r["text"] for r in loads(first)["results"]]
    assert new["settings"]["replay_of"] and new["settings"]["system"] == "Terse."
    (tmp_path / "bad.json").write_bytes(first.replace(b"Terse.", b"Verbose"))
    assert experiment_main(["show", "bad.json"]) == 2
    assert "settings section does not match" in capsys.readouterr().err


def test_diff_marks_changed_outputs_and_scores(experiment: bytes) -> None:
    old = loads(experiment)
    new = json.loads(experiment)
    new["results"][0]["text"] = "something else"
    new["results"][0]["score"] = 1.0
    d = diff(old, new)
    assert (d["pairs"], d["changed"], d["unchanged"]) == (4, 1, 3)
    first = d["rows"][0]
    assert first["text_changed"] and first["score_changed"] and not first["unchanged"]


# -- the Batch tab -----------------------------------------------------------------------------------


@dataclass
class FakeRequest:
    session_hash: str
    username: str | None = None


def test_the_batch_tab_offers_opens_and_replays_the_file_without_writing_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'parley.db'}"
    engine = make_engine(url)
    init_db(engine)
    env = {"DATABASE_URL": url, "BATCH_RATE_LIMIT": "8/hour"}
    services = Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env)), engine)
    with gr.Blocks():
        ctx = TabContext(services=services, owner=gr.State(None), model=gr.Dropdown(), system_prompt=gr.Textbox(), params=[])
        tab = build_batch_tab(ctx)
    tab.handlers.root = tmp_path / "runs"
    request = FakeRequest("alice-session")

    async def collect(gen: Any) -> list[dict[Any, Any]]:
        return [out async for out in gen]

    outs = asyncio.run(collect(tab.handlers.run(str(prompts_file(tmp_path)), MODELS, 4, "", 300, None, None, request)))
    final = outs[-1]
    files = final[tab.downloads]
    (experiment_path,) = [f for f in files if f.endswith("batch-experiment.json")]
    run = final[tab.run_state]

    def counts() -> tuple[int, int]:
        with engine.connect() as c:
            return (c.execute(sa.text("select count(*) from conversation")).scalar_one(),
                    c.execute(sa.text("select count(*) from message")).scalar_one())

    part = tab.experiment
    assert part is not None
    v = part.view
    before = counts()
    opened = asyncio.run(part.open(experiment_path))
    assert "Every hash checks out" in opened[v.status] and len(opened[v.shown]["value"]) == 4
    doc = opened[v.doc]
    assert counts() == before, "opening writes nothing"

    tampered = tmp_path / "tampered.json"
    tampered.write_bytes(Path(experiment_path).read_bytes().replace(b"Say hello.", b"Say hullo."))
    refused = asyncio.run(part.open(str(tampered)))
    assert "prompts section does not match" in refused[v.status] and "Nothing was loaded" in refused[v.status]
    assert refused[v.doc] is gr.skip() or refused[v.doc] == gr.skip(), "the open file stays as it was"

    replayed = asyncio.run(collect(part.replay(doc, run, None, request)))
    last = replayed[-1]
    assert "4 unchanged, 0 changed" in last[v.status]
    assert list(last[v.diff]["value"]["Change"]) == ["= unchanged"] * 4
    assert [Path(f).name for f in last[v.downloads]["value"]] == ["batch-experiment.json", "replay-diff.json"]
    assert counts() == before, "a replay, like any batch, is not stored in the database"

    # The replay was charged to the batch budget (8 calls: 4 for the run, 4 for the replay): a third is refused.
    again = asyncio.run(collect(part.replay(doc, last[part.run_state], None, request)))
    assert "Nothing was run" in again[-1][v.status]
    services.close()


def test_judge_verdicts_are_a_hashed_section(experiment: bytes, tmp_path: Path) -> None:
    from core.experiment import JUDGES_NAME, judges_in

    assert judges_in(tmp_path) is None, "no judges yet: the section is null"
    verdict = {"judge": "openai:gpt-judge", "prompt_id": "q1", "model_a": MODELS[0], "model_b": MODELS[1],
               "verdict_ab": "a", "verdict_ba": "tie", "final": "tie", "template_hash": "0123456789abcdef"}
    (tmp_path / JUDGES_NAME).write_text(json.dumps(verdict) + "\n", encoding="utf-8")
    judges = judges_in(tmp_path)
    assert judges == [verdict]
    doc = loads(experiment)
    judged = build(prompts=prompts_of(doc), models=MODELS, params=doc["settings"]["params"], system=doc["settings"]["system"],
                   rows=doc["results"], summary=doc["summary"], judges=judges, created_at=doc["manifest"]["created_at"])
    assert loads(dumps(judged))["judges"] == [verdict]
    judged["judges"][0]["final"] = "a"
    with pytest.raises(ExperimentError, match="judges section"):
        loads(dumps(judged))


def test_the_api_opens_a_file_read_only_and_replays_it(experiment: bytes, fake_server: Any, tmp_path: Path) -> None:
    """`/experiment` through the running app: the file's JSON text opens read-only (a tampered one is refused);
    `replay` runs it again on the demo provider, charged to the batch budget, and answers the diff and the new file."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from tests.apphelpers import app_env, in_process_app

    text = experiment.decode("utf-8")
    env = app_env(fake_server, f"sqlite:///{tmp_path / 'parley.db'}", BATCH_RATE_LIMIT="6/hour")
    with in_process_app(env) as (url, services):
        client = Client(url, verbose=False)
        opened = client.predict(experiment=text, replay=False, api_name="/experiment")
        assert "Every hash checks out" in opened["description"] and len(opened["rows"]) == 4
        assert "diff" not in opened, "opening runs nothing"
        with pytest.raises(AppError, match="does not match"):
            client.predict(experiment=text.replace("Say hello.", "Say hullo."), api_name="/experiment")
        replayed = client.predict(experiment=text, replay=True, api_name="/experiment")
        assert (replayed["diff"]["unchanged"], replayed["diff"]["changed"]) == (4, 0)
        again = loads(replayed["experiment"])  # the new file is a valid experiment file of the same prompts
        assert [p["id"] for p in again["prompts"]] == ["q1", "q2"] and len(again["results"]) == 4
        # 6 calls an hour: the replay took 4, a second needs 4 more and is refused before anything runs.
        with pytest.raises(AppError, match="Nothing was run"):
            client.predict(experiment=text, replay=True, api_name="/experiment")
