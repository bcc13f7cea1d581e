"""The batch tab's handlers against the fake provider server: run, validation, stop, downloads."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pytest

from chat.registry import Registry, Settings
from core.batch import MAX_CALLS, BatchRun
from core.config import AppConfig
from core.services import Services
from storage.db import init_db, make_engine
from tests.apphelpers import app_env
from ui.batch import build_batch_tab
from ui.context import TabContext


@dataclass
class FakeRequest:
    session_hash: str
    username: str | None = None


ALICE = FakeRequest("alice-session")
BOB = FakeRequest("bob-session")


def make_view(fake_server, tmp_path, **env):
    environment = app_env(fake_server, f"sqlite:///{tmp_path / 'parley.db'}", **env)
    engine = make_engine(environment["DATABASE_URL"])
    init_db(engine)
    services = Services.build(AppConfig.from_env(environment), Registry.from_settings(Settings.from_env(environment)), engine)
    # fail-500-always is retried before it is given up: keep the waits short.
    services.policy = dataclasses.replace(services.policy, backoff_base=0.01, backoff_max=0.02)
    with gr.Blocks():
        ctx = TabContext(services=services, owner=gr.State(None), model=gr.Dropdown(), system_prompt=gr.Textbox(), params=[])
        view = build_batch_tab(ctx)
    view.handlers.root = tmp_path / "runs"
    return view


@pytest.fixture
def view(fake_server, tmp_path):
    return make_view(fake_server, tmp_path)


def prompts_file(tmp_path: Path, lines: list[str], name: str = "prompts.jsonl") -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


async def collect(gen) -> list[dict]:
    return [out async for out in gen]


def run_all(view, file, models, request=ALICE, concurrency=4, system="", max_tokens=None, previous=None):
    return asyncio.run(collect(view.handlers.run(file, models, concurrency, system, max_tokens, previous, None, request)))


def test_run_two_models_one_failing_gives_summary_and_downloads(view, tmp_path, fake_server):
    file = prompts_file(tmp_path, [json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) for i in range(3)])
    outs = run_all(view, file, ["openai:fast", "openai:fail-500-always"], system="Be brief.", max_tokens=64)
    final = outs[-1]
    assert "Finished" in final[view.status] and "6/6 done, 3 errors" in final[view.status]
    assert any("Running" in o[view.status] for o in outs[:-1]), "progress is shown while it runs"

    summary = final[view.summary].set_index("Model")
    assert summary.loc["openai:fast", "Done"] == 3 and summary.loc["openai:fast", "Errors"] == 0
    assert summary.loc["openai:fail-500-always", "Done"] == 0 and summary.loc["openai:fail-500-always", "Errors"] == 3
    assert summary.loc["openai:fast", "Tokens out"] == 60
    assert len(final[view.results]) == 6

    jsonl, csv_path, summary_json, experiment = final[view.downloads]
    assert Path(experiment).name == "batch-experiment.json"  # tests/test_experiment.py opens and replays it
    doc = json.loads(Path(summary_json).read_text())  # the CLI's --summary document, without the server's path
    assert doc["models"]["openai:fast"]["done"] == 3 and "out_path" not in doc
    rows = [json.loads(line) for line in Path(jsonl).read_text().splitlines()]
    assert sorted((r["prompt_id"], r["model"]) for r in rows) == sorted(
        (f"q{i}", m) for i in range(3) for m in ("openai:fast", "openai:fail-500-always"))
    assert all((r["error"] is None) == (r["model"] == "openai:fast") for r in rows)
    table = list(csv.DictReader(io.StringIO(Path(csv_path).read_text())))
    assert len(table) == 6 and {t["prompt_id"] for t in table} == {"q0", "q1", "q2"}

    sent = [r for r in fake_server.requests if r.model == "fast" and r.provider == "openai" and r.json
            and r.json.get("messages") and r.json["messages"][-1]["content"] == "question 1"][-1]
    assert sent.json["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent.json.get("max_tokens") == 64 or sent.json.get("max_completion_tokens") == 64

    # Each run gets its own unguessable directory, outside any shared path.
    run = final[view.run_state]
    assert isinstance(run, BatchRun) and run.directory.parent == tmp_path / "runs"
    assert len(run.directory.name) > 8
    # The downloads are copies in the short-lived export folder: per owner, then an unguessable name.
    from ui.exports import exports_for

    folder = Path(jsonl).parent
    assert folder != run.directory and len(folder.name.split("-", 1)[1]) >= 20
    assert folder.parent.name == exports_for(view.handlers.s).owner_dir("session:alice-session")


def test_bad_inputs_are_refused_with_clear_messages_and_nothing_runs(view, tmp_path, fake_server):
    fake_server.clear()
    bad = prompts_file(tmp_path, ['{"prompt": "fine"}', '{"prompt": "broken",', '{"prompt": "fine too"}'])
    out = run_all(view, bad, ["openai:fast"])[-1]
    assert "prompts.jsonl, line 2" in out[view.status] and "not valid JSON" in out[view.status]

    missing_key = prompts_file(tmp_path, ['{"prompt": "ok"}', '{"promt": "typo"}'], name="typo.jsonl")
    assert "typo.jsonl, line 2" in run_all(view, missing_key, ["openai:fast"])[-1][view.status]

    good = prompts_file(tmp_path, ["hello", "world"], name="two.txt")
    unknown = run_all(view, good, ["openai:fast", "nosuchprovider:x"])[-1][view.status]
    assert "nosuchprovider" in unknown and "⚠️" in unknown
    assert "at least one model" in run_all(view, good, [])[-1][view.status]
    assert "at most 6" in run_all(view, good, [f"openai:fast-{i}" for i in range(7)])[-1][view.status]
    assert "Upload a prompts file" in run_all(view, None, ["openai:fast"])[-1][view.status]
    assert "Max tokens" in run_all(view, good, ["openai:fast"], max_tokens=0)[-1][view.status]

    many = prompts_file(tmp_path, [f"prompt {i}" for i in range(MAX_CALLS // 2 + 1)], name="many.txt")
    too_many = run_all(view, many, ["openai:fast", "openai:gpt-test"])[-1][view.status]
    assert f"{MAX_CALLS:,}" in too_many and "calls" in too_many

    wrong_type = prompts_file(tmp_path, ["a,b"], name="prompts.csv")
    assert ".jsonl or .txt" in run_all(view, wrong_type, ["openai:fast"])[-1][view.status]
    assert not fake_server.requests, "no provider was called"


def test_upload_size_limit(fake_server, tmp_path):
    view = make_view(fake_server, tmp_path)
    view.handlers.s.config.max_upload_bytes = 100
    big = prompts_file(tmp_path, ["x" * 200])
    assert "limited to" in run_all(view, big, ["openai:fast"])[-1][view.status]


def test_stop_keeps_finished_rows_and_only_the_owner_can_stop(view, tmp_path, fake_server):
    file = prompts_file(tmp_path, [f"prompt {i}" for i in range(6)], name="six.txt")

    async def scenario():
        gen = view.handlers.run(file, ["openai:rate-20-tokens-8"], 1, "", None, None, None, ALICE)
        run = None
        async for out in gen:
            run = out[view.run_state]
            if "1/6 done" in out[view.status] or "2/6 done" in out[view.status]:
                break
        assert isinstance(run, BatchRun)
        refused = await view.handlers.stop(run, None, BOB)
        assert refused[view.status] == "Nothing is running."
        stopped = await view.handlers.stop(run, None, ALICE)
        rest = [out async for out in gen]
        return run, stopped, rest

    run, stopped, rest = asyncio.run(scenario())
    assert "Stopped" in stopped[view.status] and "were not run" in stopped[view.status]
    rows = [json.loads(line) for line in run.out_path.read_text().splitlines()]
    assert 1 <= len(rows) < 6 and all(r["error"] is None for r in rows)
    jsonl, csv_path, _summary, _experiment = stopped[view.downloads]
    assert len(Path(jsonl).read_text().splitlines()) == len(rows)
    assert len(list(csv.DictReader(io.StringIO(Path(csv_path).read_text())))) == len(rows)
    assert stopped[view.stop_button]["visible"] is False and stopped[view.run_button]["interactive"] is True
    assert not view.handlers._active, "the run is no longer active"
    # The in-flight reply was hung up on, not left running.
    fake_server.wait_for(lambda: any(s.model == "rate-20-tokens-8" and s.client_closed for s in fake_server.stream_log), timeout=5)


def test_a_run_counts_every_call_against_the_batch_budget(fake_server, tmp_path):
    view = make_view(fake_server, tmp_path, RATE_LIMIT="1/minute", BATCH_RATE_LIMIT="8/hour")
    file = prompts_file(tmp_path, ["a", "b", "c"], name="three.txt")
    first = run_all(view, file, ["openai:fast", "openai:gpt-test"])[-1]
    assert "6/6 done, 0 errors" in first[view.status]
    second = run_all(view, file, ["openai:fast"])[-1]
    assert "needs 3 calls" in second[view.status] and "2 are left" in second[view.status]
    # More: tests/test_ratelimit_seams.py (addresses, Redis, nothing sent when refused).
