"""`python -m compare.batch ... --judge MODEL [--judge-rubric]`: judge verdicts and rubric scores in OUT.judges.jsonl,
the printed table and the --summary JSON's `judges`; judges are fake OpenAI models on the fake server."""

from __future__ import annotations

import json

from compare.batch import main
from tests.fakes import Scenario

ANSWERS = {"gpt-jdgcli-a": "Paris.", "gpt-jdgcli-b": "Lyon, I think."}


def test_cli_judge_writes_verdicts_and_the_summary_key(tmp_path, monkeypatch, capsys, fake_server):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PARLEY_PRICES_FILE", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_server.openai_base_url)
    for name, text in ANSWERS.items():
        fake_server.set_scenario(name, Scenario(text=text))
    # Always the first answer, and a rating of 7: each parser reads the last bracket of its own kind.
    fake_server.set_scenario("jdgcli-judge", Scenario(text="Verdict [[1]]. Rating [[7]]"))
    (tmp_path / "p.jsonl").write_text('{"id": "q1", "prompt": "Capital of France?"}\n{"id": "q2", "prompt": "Again?"}\n')
    models = ",".join(f"openai:{m}" for m in ANSWERS)
    code = main(["p.jsonl", "--models", models, "--out", "r.jsonl", "--summary", "s.json", "--judge", "openai:jdgcli-judge",
                 "--judge-rubric"])
    assert code == 0
    assert "Judges:" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "r.judges.jsonl").read_text().splitlines()]
    pairs = [r for r in rows if r["kind"] == "pair"]
    rubric = [r for r in rows if r["kind"] == "rubric"]
    assert len(pairs) == 2 and len(rubric) == 4  # 2 prompts × 1 pair; 2 prompts × 2 answers
    # Answer 1 in both orders: position bias, so a tie and inconsistent.
    assert all((r["verdict_ab"], r["verdict_ba"], r["final"], r["consistent"]) == ("1", "1", "tie", False) for r in pairs)
    assert all(r["score"] == round(6 / 9, 4) for r in rubric)
    judged = [r for r in fake_server.requests if r.model == "jdgcli-judge" and r.method == "POST"]
    assert len(judged) == 2 * 2 + 4
    assert all("gpt-jdgcli" not in json.dumps(r.json) for r in judged), "judges never see model names"
    doc = json.loads((tmp_path / "s.json").read_text())
    j = doc["judges"]["openai:jdgcli-judge"]
    assert j["pairs"] == 2 and j["unparsed"] == 0 and j["consistency"] == 0.0
    assert {m: w["win_rate"] for m, w in j["win_rates"].items()} == {f"openai:{m}": 0.5 for m in ANSWERS}
    assert j["rubric"] == {f"openai:{m}": {"n": 2, "mean": round(6 / 9, 4)} for m in ANSWERS}
    assert set(doc["models"]) == {f"openai:{m}" for m in ANSWERS}, "the summary keeps what it had"


def test_cli_judge_rubric_needs_a_judge(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.txt").write_text("one\n")
    assert main(["p.txt", "--models", "demo:parley-demo", "--out", "r.jsonl", "--judge-rubric"]) == 2
    assert "--judge-rubric needs --judge" in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()
