"""The Batch tab's "Judge this run" against the fake provider server: verdicts and rubric scores on a finished run,
stored apart (by run), written beside the results and into the summary download; the batch budget is charged first."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from storage import judges as store
from tests.fakes import Scenario
from tests.test_batch_ui import ALICE, BOB, collect, make_view, prompts_file

ANSWERS = {"gpt-jdgbatch-a": "Four.", "gpt-jdgbatch-b": "Five."}
MODELS = [f"openai:{m}" for m in ANSWERS]


def run_and_judge(fake_server, tmp_path, judges: list[str], rubric: bool, **env) -> tuple[Any, Any, dict, int]:
    """Run a 2-prompt batch of the two models, then judge it, in one event loop (the SDK client keeps its loop)."""
    for name, text in ANSWERS.items():
        fake_server.set_scenario(name, Scenario(text=text))
    fake_server.set_scenario("jdgbatch-judge", Scenario(text="Answer 2 is right. [[2]] My rating: [[9]]"))
    view = make_view(fake_server, tmp_path, **env)
    file = prompts_file(tmp_path, [json.dumps({"id": f"q{i}", "prompt": f"What is 2+2? ({i})"}) for i in range(2)])

    async def go() -> tuple[Any, dict, int]:
        final = (await collect(view.handlers.run(file, MODELS, 4, "", None, None, None, ALICE)))[-1]
        run = final[view.run_state]
        before = judge_posts(fake_server)
        return run, await view.judges.judge(judges, rubric, run, None, ALICE), before

    run, out, before = asyncio.run(go())
    return view, run, out, before


def judge_posts(fake_server) -> int:
    return sum(1 for r in fake_server.requests if r.model == "jdgbatch-judge" and r.method == "POST")


def test_judge_this_run_shows_win_rates_and_rubric_and_writes_them(fake_server, tmp_path):
    view, run, out, before = run_and_judge(fake_server, tmp_path, ["openai:jdgbatch-judge"], True)
    # 2 prompts × 1 pair × 2 orders + 2 prompts × 2 answers
    assert "8 judge calls" in out[view.judges.status] and judge_posts(fake_server) == before + 8
    table = out[view.judges.table]["value"].set_index("Model")
    # "[[2]]" in both orders: always the second answer, so every pair a tie (inconsistent).
    assert set(table.index) == set(MODELS) and (table["Win rate"] == "50%").all() and (table["Consistency"] == "0%").all()
    assert (table["Rubric (0–1)"] == f"{8 / 9:.3f}").all()
    judged = Path(out[view.judges.download]["value"]).read_text().splitlines()
    assert len(judged) == 2 + 4
    doc = json.loads(run.summary_path.read_text())
    assert doc["judges"]["openai:jdgbatch-judge"]["consistency"] == 0.0 and "models" in doc
    stored = asyncio.run(view.judges.use_case.s.db(store.judge_verdicts, owner="session:alice-session", batch_run=run.id))
    assert len(stored) == 6 and {v.batch_prompt for v in stored} == {"q0", "q1"}
    # Another session cannot judge this run.
    assert "Run a batch first" in asyncio.run(view.judges.judge(["openai:jdgbatch-judge"], False, run, None, BOB))[view.judges.status]


def test_judging_over_the_batch_budget_is_refused_and_sends_nothing(fake_server, tmp_path):
    view, run, out, before = run_and_judge(fake_server, tmp_path, ["openai:jdgbatch-judge"], False,
                                           BATCH_RATE_LIMIT="6/hour")  # the run took 4
    assert "needs 4 provider calls" in out[view.judges.status] and judge_posts(fake_server) == before
    assert not Path(run.directory / "batch-judges.jsonl").exists()
