"""The batch use case (core.batch.Batches) without Gradio: the app's own Services and rate limiter, the offline
demo provider and the fake OpenAI server."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chat.registry import Registry, Settings
from compare.experiment import loads
from core.batch import MAX_CALLS, Batches, BatchInputError
from core.config import AppConfig
from core.services import Services
from storage.db import init_db, make_engine

ALICE = "user:alice"
BOB = "user:bob"


@pytest.fixture
def make_batches(tmp_path: Path, fake_server: Any) -> Iterator[Any]:
    built: list[Services] = []

    def make(**settings: str) -> Batches:
        env = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": fake_server.openai_base_url, **settings}
        engine = make_engine(f"sqlite:///{tmp_path / 'batch.db'}")
        init_db(engine)
        services = Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env)), engine)
        built.append(services)
        return Batches(services, root=tmp_path / "runs")

    yield make
    for services in built:
        services.close()


def prompts_file(tmp_path: Path, count: int, name: str = "prompts.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n" for i in range(count)), encoding="utf-8")
    return str(path)


def test_validation_refuses_what_cannot_run(make_batches: Any, tmp_path: Path) -> None:
    batches = make_batches()
    good = prompts_file(tmp_path, 2)
    job = batches.validate(good, ["demo:parley-demo", "demo:parley-demo"], 2, "  Be brief. ", 64)
    assert job.models == ["demo:parley-demo"] and job.calls == 2 and job.system == "Be brief." and job.params.max_tokens == 64
    cases: list[tuple[tuple[Any, ...], str]] = [
        ((None, ["demo:parley-demo"], 2, "", None), "Upload a prompts file"),
        ((str(tmp_path / "p.csv"), ["demo:parley-demo"], 2, "", None), "must be .jsonl or .txt"),
        ((good, [], 2, "", None), "Choose at least one model"),
        ((good, ["nowhere:model"], 2, "", None), "nowhere"),
        ((good, ["demo:parley-demo"], 99, "", None), "Concurrency"),
        ((good, ["demo:parley-demo"], 2, "", -5), "Max tokens"),
        ((prompts_file(tmp_path, MAX_CALLS + 1, "many.jsonl"), ["demo:parley-demo"], 2, "", None), "limited to"),
    ]
    (tmp_path / "p.csv").write_text("x\n")
    for args, words in cases:
        with pytest.raises(BatchInputError, match=words):
            batches.validate(*args)


def test_a_run_over_the_batch_budget_is_refused_whole(make_batches: Any, tmp_path: Path) -> None:
    batches = make_batches(BATCH_RATE_LIMIT="3/hour")
    job = batches.validate(prompts_file(tmp_path, 2), ["demo:parley-demo", "openai:fast"], 2, "", None)
    with pytest.raises(BatchInputError, match="needs 4 calls"):
        asyncio.run(batches.charge(None, ALICE, job))
    assert not batches.active and not (tmp_path / "runs").exists()
    smaller = batches.validate(prompts_file(tmp_path, 3, "three.jsonl"), ["demo:parley-demo"], 2, "", None)
    asyncio.run(batches.charge(None, ALICE, smaller))  # the refusal charged nothing: 3 of 3 are left


def test_a_run_writes_its_files_and_one_owner_runs_one_batch(make_batches: Any, tmp_path: Path) -> None:
    batches = make_batches()
    job = batches.validate(prompts_file(tmp_path, 3), ["demo:parley-demo", "openai:fast"], 2, "", None)

    async def go() -> None:
        run, task = batches.start(ALICE, job)
        with pytest.raises(BatchInputError, match="already running"):
            batches.check_idle(ALICE)
        batches.check_idle(BOB)  # another owner is not held up
        summary = await task
        assert summary.ran == 6 and summary.errors == 0
        files = batches.write_csv(run, summary)
        assert files == [run.out_path, run.csv_path, run.summary_path, run.experiment_path]
        assert len(loads(run.experiment_path.read_bytes())["results"]) == 6, "the experiment file holds the run's rows"
        assert json.loads(run.summary_path.read_text(encoding="utf-8"))["models"], "the summary names the run's model"
        assert len(list(csv.DictReader(io.StringIO(run.csv_path.read_text(encoding="utf-8"))))) == 6
        await batches.end(run.id)
        assert not batches.active
        batches.check_idle(ALICE)
        # The next run of the session removes the last one's files.
        second, task2 = batches.start(ALICE, job, previous=run)
        assert not run.directory.exists() and second.directory.exists()
        await batches.stop(second, BOB)  # not Bob's to stop
        assert second.id in batches.active
        await batches.stop(second, ALICE)
        assert task2.done() and not batches.active

    asyncio.run(go())


def test_a_batch_with_a_flagged_prompt_is_refused_whole(make_batches: Any, tmp_path: Path, fake_server: Any) -> None:
    """MODERATION=openai checks every prompt of a batch before it runs (it checked none); one flagged prompt
    refuses the run, naming it, and nothing is started."""
    batches = make_batches(MODERATION="openai")
    path = tmp_path / "flag.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in (
        {"id": "fine", "prompt": "Name a colour."}, {"id": "bad", "prompt": "say FLAGME"})), encoding="utf-8")
    job = batches.validate(str(path), ["demo:parley-demo"], 2, "", None)
    with pytest.raises(BatchInputError, match=r"1 prompt\(s\) were flagged.*bad \(harassment\).*Nothing was run"):
        asyncio.run(batches.charge(None, ALICE, job))
    assert not batches.active and not (tmp_path / "runs").exists()
    checked = [r.json.get("input") for r in fake_server.requests if r.path.endswith("/moderations")]
    assert "Name a colour." in checked and "say FLAGME" in checked
    clean = batches.validate(prompts_file(tmp_path, 2), ["demo:parley-demo"], 2, "", None)
    asyncio.run(batches.charge(None, ALICE, clean))  # passes
