"""Batch runs through the real registry and turn runner against the fake provider servers."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from chat.errors import ChatError, NotConfigured
from chat.registry import Registry, Settings
from chat.turn import TurnPolicy
from chat.types import Params
from compare.batch import (
    RESULT_FIELDS,
    BatchError,
    Prompt,
    PromptFileError,
    latest_rows,
    load_prompts,
    main,
    parse_prompts,
    read_results,
    rows_to_csv,
    run_batch,
    summarize,
)
from compare.pricing import Price, PriceTable
from tests.fakes import Scenario, default_tokens

# Retries as in a chat turn, with short waits so failing models do not slow the tests.
FAST = TurnPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02, first_token_timeout=10, idle_timeout=10)


@pytest.fixture
async def registry(fake_server, tmp_path):
    env = {
        "OPENAI_API_KEY": "test-key",
        "OPENAI_BASE_URL": fake_server.openai_base_url,
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": fake_server.anthropic_base_url,
        "GEMINI_API_KEY": "test-key",
        "GOOGLE_GEMINI_BASE_URL": fake_server.gemini_base_url,
    }
    reg = Registry.from_settings(Settings.from_env(env, cwd=tmp_path), demo_rate=0)
    yield reg
    await reg.aclose()


def prompts(n: int, prefix: str = "p") -> list[Prompt]:
    return [Prompt(f"{prefix}{k}", f"question {k}") for k in range(n)]


def posts(server, model: str) -> int:
    return sum(1 for r in server.requests if r.model == model and r.method == "POST")


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- running ----------------------------------------------------------------------------------------


async def test_every_pair_is_written_with_metrics_and_cost(registry, tmp_path):
    out = tmp_path / "results.jsonl"
    seen: list[tuple[int, int]] = []
    models = ["demo:parley-demo", "openai:gpt-test-batch", "anthropic:claude-test-batch", "gemini:gemini-test-batch"]
    prices = PriceTable({"demo:*": Price(0, 0), "openai:gpt-test*": Price(1.0, 2.0)})
    summary = await run_batch(registry, prompts(3), models, out_path=out, concurrency=4, policy=FAST,
                              progress=lambda d, t: seen.append((d, t)), prices=prices, system="Be brief.")

    rows = lines(out)
    assert len(rows) == 12 and all(tuple(r) == RESULT_FIELDS for r in rows)
    assert {(r["prompt_id"], r["model"]) for r in rows} == {(f"p{k}", m) for k in range(3) for m in models}
    for r in rows:
        assert r["error"] is None and r["finish_reason"] == "stop" and r["attempts"] == 1, r
        assert r["ttft_ms"] > 0 and r["duration_ms"] >= r["ttft_ms"] and r["output_tokens"] > 0
        datetime.fromisoformat(r["started_at"].replace("Z", "+00:00"))
    oai = next(r for r in rows if r["model"] == "openai:gpt-test-batch")
    assert oai["text"] == "".join(default_tokens(20))
    assert oai["cost"] == pytest.approx((oai["input_tokens"] * 1.0 + oai["output_tokens"] * 2.0) / 1e6)
    assert all(r["cost"] == 0.0 for r in rows if r["model"] == "demo:parley-demo")
    assert all(r["cost"] is None for r in rows if r["model"].startswith(("anthropic", "gemini")))

    assert seen[0] == (0, 12) and seen[-1] == (12, 12) and [d for d, _ in seen] == list(range(13))
    assert (summary.pairs, summary.ran, summary.skipped, summary.errors) == (12, 12, 0, 0)
    assert [m.model for m in summary.models] == models and all(m.done == 3 for m in summary.models)


async def test_a_failing_model_gives_error_rows_and_the_others_finish(registry, tmp_path):
    out = tmp_path / "results.jsonl"
    summary = await run_batch(registry, prompts(3), ["openai:fail-500-always", "demo:parley-demo"], out_path=out,
                              policy=FAST)
    rows = lines(out)
    bad = [r for r in rows if r["model"] == "openai:fail-500-always"]
    good = [r for r in rows if r["model"] == "demo:parley-demo"]
    assert len(bad) == len(good) == 3
    for r in bad:
        assert r["finish_reason"] == "error" and r["error"] and r["error_kind"] == "overloaded"
        assert r["attempts"] == 2 and r["text"] == "" and r["cost"] is None  # retried as a chat turn would be
    assert all(r["error"] is None and r["text"] for r in good)
    by_model = {m.model: m for m in summary.models}
    assert (by_model["openai:fail-500-always"].done, by_model["openai:fail-500-always"].errors) == (0, 3)
    assert by_model["openai:fail-500-always"].ttft_p50_ms is None
    assert (by_model["demo:parley-demo"].done, by_model["demo:parley-demo"].errors) == (3, 0)
    assert summary.errors == summary.run_errors == 3


async def test_resume_skips_finished_pairs_and_retries_errors(registry, fake_server, tmp_path):
    out = tmp_path / "results.jsonl"
    model = "gpt-test-resume"
    before = posts(fake_server, model)
    first = await run_batch(registry, prompts(4), [f"openai:{model}"], out_path=out, policy=FAST)
    assert first.ran == 4 and posts(fake_server, model) == before + 4

    rows = sorted(lines(out), key=lambda r: r["prompt_id"])  # written in completion order
    rows[2]["error"] = "boom"  # a failed row is run again
    kept = [json.dumps(r) for r in rows[:3]]  # the fourth row is lost
    out.write_text("\n".join(kept) + '\n{"prompt_id": "p3", "mod')  # ...and a crash left half a line

    second = await run_batch(registry, prompts(4), [f"openai:{model}"], out_path=out, policy=FAST)
    assert posts(fake_server, model) == before + 6  # only p2 (error) and p3 (missing)
    assert (second.pairs, second.skipped, second.ran, second.ignored_lines) == (4, 2, 2, 1)
    assert second.errors == 0 and second.models[0].done == 4

    again = read_results(out)  # the new rows start on a fresh line: nothing glued onto the broken one
    assert len(again) == 5 and {r["prompt_id"] for r in again[-2:]} == {"p2", "p3"}
    assert sorted(r["prompt_id"] for r in latest_rows(again)) == ["p0", "p1", "p2", "p3"]
    assert all(r["error"] is None for r in latest_rows(again))

    third = await run_batch(registry, prompts(4), [f"openai:{model}"], out_path=out, policy=FAST)
    assert third.ran == 0 and third.skipped == 4 and posts(fake_server, model) == before + 6


async def test_concurrency_overlaps_streams_and_respects_the_limit(registry, fake_server, tmp_path):
    slow = Scenario(tokens=10, rate=20)  # about half a second per reply
    fake_server.set_scenario("batch-overlap", slow)
    fake_server.set_scenario("batch-limit", slow)

    four = await run_batch(registry, prompts(4), ["openai:batch-overlap"], out_path=tmp_path / "four.jsonl",
                           concurrency=4)
    assert four.ran == 4 and four.errors == 0
    # Overlap is read from the fake's own log of when each stream was open (no timing assertion).
    assert await peak_streams(fake_server, "batch-overlap", 4) == 4

    await run_batch(registry, prompts(4), ["openai:batch-limit"], out_path=tmp_path / "two.jsonl", concurrency=2)
    assert await peak_streams(fake_server, "batch-limit", 4) == 2


async def peak_streams(fake_server, model: str, count: int) -> int:
    """The most streams of `model` the fake had open at once, once all `count` have ended.

    The fake notes a stream's end just after writing its last bytes, so the client can finish first:
    wait (briefly) for every end to be recorded before reading them.
    """
    for _ in range(200):
        records = [s for s in fake_server.stream_log if s.model == model]
        if len(records) == count and all(s.ended is not None for s in records):
            break
        await asyncio.sleep(0.01)
    assert len(records) == count and all(s.ended is not None for s in records), records
    edges = sorted([(s.started, 1) for s in records] + [(s.ended, -1) for s in records], key=lambda e: (e[0], e[1]))
    in_flight = peak = 0
    for _, step in edges:
        in_flight += step
        peak = max(peak, in_flight)
    return peak


async def test_bad_batches_fail_before_running(registry, tmp_path):
    out = tmp_path / "r.jsonl"
    with pytest.raises(NotConfigured, match="Unknown provider 'nope'"):
        await run_batch(registry, prompts(1), ["demo:parley-demo", "nope:model"], out_path=out)
    with pytest.raises(BatchError, match="Concurrency must be at least 1"):
        await run_batch(registry, prompts(1), ["demo:parley-demo"], out_path=out, concurrency=0)
    with pytest.raises(BatchError, match="no prompts"):
        await run_batch(registry, [], ["demo:parley-demo"], out_path=out)
    with pytest.raises(BatchError, match="used twice"):
        await run_batch(registry, [Prompt("x", "a"), Prompt("x", "b")], ["demo:parley-demo"], out_path=out)
    with pytest.raises(BatchError, match="No models"):
        await run_batch(registry, prompts(1), [], out_path=out)
    assert not out.exists()


async def test_prompt_system_and_params_reach_the_provider(registry, fake_server, tmp_path):
    model = "gpt-test-batch-params"
    ps = [Prompt("own", "hi", system="Row system."), Prompt("default", "hello")]
    await run_batch(registry, ps, [f"openai:{model}"], out_path=tmp_path / "r.jsonl", system="Batch system.",
                    params=Params(max_tokens=33, temperature=0.5))
    bodies = [r.json for r in fake_server.requests if r.model == model]
    systems = sorted(m["content"] for b in bodies for m in b["messages"] if m["role"] == "system")
    assert systems == ["Batch system.", "Row system."]
    assert all(b["temperature"] == 0.5 for b in bodies)
    assert all(33 in (b.get("max_tokens"), b.get("max_completion_tokens")) for b in bodies)


# -- summaries and CSV ----------------------------------------------------------------------------


def row(pid, model, *, error=None, ttft=None, tps=None, tin=None, tout=None, cost=None):
    return {"prompt_id": pid, "model": model, "error": error, "ttft_ms": ttft, "tokens_per_second": tps,
            "input_tokens": tin, "output_tokens": tout, "cost": cost}


def test_summary_numbers_come_from_the_rows():
    ttfts = [100.0, 200.0, 300.0, 400.0, 1000.0]
    rows = [row(f"p{k}", "a:m", ttft=t, tps=10.0 * (k + 1), tin=10, tout=20, cost=0.001) for k, t in enumerate(ttfts)]
    rows += [
        row("p5", "a:m", error="failed", ttft=5.0, tin=10, tout=None, cost=None),  # errors: not in latency figures
        row("p0", "b:m", error="first try failed"),
        row("p0", "b:m", ttft=50.0, tps=99.0, tin=1, tout=2),  # the retry replaces the failure
        row("p1", "b:m", error="still failing"),
    ]
    s = summarize(rows, models=["b:m", "a:m", "c:m"])
    assert [m.model for m in s.models] == ["b:m", "a:m", "c:m"]
    a, b, c = s.models[1], s.models[0], s.models[2]
    assert (a.done, a.errors) == (5, 1)
    assert a.ttft_p50_ms == pytest.approx(np.percentile(ttfts, 50))
    assert a.ttft_p95_ms == pytest.approx(np.percentile(ttfts, 95))
    assert a.tokens_per_second_median == pytest.approx(30.0)
    assert (a.input_tokens, a.output_tokens, a.total_tokens) == (60, 100, 160)
    assert a.cost == pytest.approx(0.005) and a.cost_unknown == 1
    assert (b.done, b.errors, b.ttft_p50_ms, b.cost, b.cost_unknown) == (1, 1, 50.0, None, 2)
    assert (c.done, c.errors, c.ttft_p50_ms, c.tokens_per_second_median) == (0, 0, None, None)
    assert s.errors == 2 and s.pairs == 8

    md = s.to_markdown()
    assert md.splitlines()[0].startswith("| model | done | errors | TTFT p50 (ms) | TTFT p95 (ms)")
    assert "| a:m | 5 | 1 | 300 | 880 | 30.0 | 60 / 100 | $0.0050 (+1 unpriced) |" in md
    assert "| b:m | 1 | 1 | 50 | 50 | 99.0 | 1 / 2 | unknown |" in md
    assert s.as_dict()["models"][1]["total_tokens"] == 160
    assert list(s.to_frame()["model"]) == ["b:m", "a:m", "c:m"]


def test_rows_to_csv_has_documented_columns_and_escapes_formulas():
    rows = [{"prompt_id": "1", "model": "demo:parley-demo", "prompt": "=SUM(A1)", "text": "line one\nline, two",
             "error": None, "cost": 0.0, "attempts": 1}]
    text = rows_to_csv(rows)
    parsed = list(csv.reader(io.StringIO(text)))
    assert tuple(parsed[0]) == RESULT_FIELDS
    record = dict(zip(parsed[0], parsed[1]))
    assert record["prompt"] == "'=SUM(A1)" and record["text"] == "line one\nline, two"
    assert record["error"] == "" and record["cost"] == "0.0" and record["attempts"] == "1"
    raw = dict(zip(parsed[0], list(csv.reader(io.StringIO(rows_to_csv(rows, escape_formulas=False))))[1]))
    assert raw["prompt"] == "=SUM(A1)"


# -- prompt files ---------------------------------------------------------------------------------


def test_load_jsonl_and_txt(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"id": "q1", "prompt": "Hello?", "system": "Pirate."}\n\n{"prompt": "No id", "extra": 1}\n'
                 '{"id": 7, "prompt": "Int id", "system": ""}\n')
    assert load_prompts(f) == [Prompt("q1", "Hello?", "Pirate."), Prompt("3", "No id"), Prompt("7", "Int id")]

    t = tmp_path / "p.txt"
    t.write_text("\ufefffirst question\n\n  second one  \n")
    assert load_prompts(t) == [Prompt("1", "first question"), Prompt("3", "second one")]
    # Bytes from an upload: the format is guessed from the content, or taken from the name.
    assert load_prompts(b'{"prompt": "x"}\n') == [Prompt("1", "x")]
    assert load_prompts(b"just text\n") == [Prompt("1", "just text")]
    assert load_prompts(b'{"prompt": "x"}\n', name="odd.txt") == [Prompt("1", '{"prompt": "x"}')]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"prompt": "ok"}\n{"prompt": "bad",}\n', r"p\.jsonl, line 2: not valid JSON"),
        (b'{"prompt": "ok"}\n{"promt": "typo", "id": 1}\n', r'line 2: no "prompt" key \(keys found: id, promt\)'),
        (b'{"prompt": ""}\n', r'line 1: "prompt" must be non-empty text'),
        (b'{"prompt": 5}\n', "must be non-empty text"),
        (b'{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n', "line 2: the id 'a' is already used on line 1"),
        (b'{"id": ["a"], "prompt": "x"}\n', '"id" must be a non-empty string or an integer'),
        (b'{"prompt": "x", "system": 3}\n', '"system" must be text or null'),
        (b'"just a string"\n', "expected a JSON object"),
        (b'[{"prompt": "x"}]\n', "looks like a JSON array"),
        (b"\n\n", "has no prompts"),
        (b"\xff\xfe bad", "not UTF-8"),
    ],
)
def test_bad_prompt_files_name_the_line(tmp_path, content, message):
    f = tmp_path / "p.jsonl"
    f.write_bytes(content)
    with pytest.raises(PromptFileError, match=message):
        load_prompts(f)


def test_missing_prompt_file_and_error_types(tmp_path):
    with pytest.raises(PromptFileError, match="Could not read the prompts file"):
        load_prompts(tmp_path / "nope.jsonl")
    assert issubclass(PromptFileError, ChatError) and issubclass(PromptFileError, ValueError)


# -- command line ---------------------------------------------------------------------------------


def test_cli_runs_writes_summary_and_csv(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PARLEY_PRICES_FILE", raising=False)
    (tmp_path / "p.txt").write_text("one\ntwo\n")
    started = time.perf_counter()
    code = main(["p.txt", "--models", "demo:parley-demo", "--out", "r.jsonl", "--max-tokens", "3", "--csv", "r.csv"])
    # A bound only a hang breaks (a stuck provider call waits minutes), not a speed: the tests run three at once.
    assert code == 0 and time.perf_counter() - started < 30
    out = capsys.readouterr().out
    assert "| demo:parley-demo | 2 | 0 |" in out and "2 run, 0 already done" in out
    assert len(read_results(tmp_path / "r.jsonl")) == 2
    assert (tmp_path / "r.csv").read_text().splitlines()[0] == ",".join(RESULT_FIELDS)

    assert main(["p.txt", "--models", "demo:parley-demo", "--out", "r.jsonl"]) == 0
    assert "0 run, 2 already done" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.jsonl", "--models", "demo:parley-demo", "--out", "r.jsonl"], "Could not read the prompts file"),
        (["p.txt", "--models", "demo:parley-demo", "--out", "r.jsonl", "--temperature", "5"], "--temperature"),
        (["p.txt", "--models", "nope:x", "--out", "r.jsonl"], "Unknown provider 'nope'"),
        (["p.txt", "--models", "demo:parley-demo", "--out", "r.jsonl", "--prices", "gone.toml"], "prices file"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.txt").write_text("one\n")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "r.jsonl").exists()


async def test_batch_runs_can_use_tools(registry, fake_server, tmp_path):
    from chat.tools import toolbox_from_env
    from tests.fakes import Scenario as S

    fake_server.set_scenario("batch-calc", S(tool_calls=[{"name": "calculator", "arguments": {"expression": "3*14"}}],
                                             then=S(text="It is 42.", tokens=3)))
    out = tmp_path / "tools.jsonl"
    summary = await run_batch(registry, prompts(2), ["openai:batch-calc"], out_path=out, tools=toolbox_from_env({}))
    assert summary.errors == 0
    rows = lines(out)
    assert all(r["text"].endswith("It is 42.") for r in rows)
    assert all(r["tool_calls"][0]["name"] == "calculator" and r["tool_calls"][0]["result"].strip() == "42" for r in rows)
    assert "calculator" in rows_to_csv(rows)
    plain = await run_batch(registry, prompts(1), ["openai:gpt-test"], out_path=tmp_path / "plain.jsonl")
    assert lines(tmp_path / "plain.jsonl")[0]["tool_calls"] == [] and plain.errors == 0


# -- files named by prompts ----------------------------------------------------------------------


def _png(width: int = 32, height: int = 24) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def _prompts_with_files(folder, rows) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_prompts_files_are_read_relative_to_the_prompts_file(tmp_path):
    from compare.batch_files import load_prompt_files

    folder = tmp_path / "job"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "chart.png").write_bytes(_png(40, 30))
    (folder / "notes.md").write_text("# Notes\n", encoding="utf-8")
    path = _prompts_with_files(folder, [
        {"id": "a", "prompt": "Chart?", "files": ["img/chart.png", "notes.md"]},
        {"id": "b", "prompt": "Same chart", "files": ["img/chart.png"]},
        {"id": "c", "prompt": "No files"},
    ])
    prompts = load_prompts(path)
    assert [p.files for p in prompts] == [("img/chart.png", "notes.md"), ("img/chart.png",), ()]
    files = load_prompt_files(prompts, path.parent)
    assert sorted(files) == ["a", "b"]
    assert [(f.name, f.kind, f.width) for f in files["a"]] == [("chart.png", "image", 40), ("notes.md", "text", None)]
    assert files["b"][0] is files["a"][0], "a file named by several prompts is read and decoded once"


@pytest.mark.parametrize(("name", "problem"), [
    ("../outside.png", "outside the prompts file's folder"),
    ("/etc/hostname", "absolute path"),
    ("link.png", "outside the prompts file's folder"),
    ("missing.png", "not found next to the prompts file"),
    ("fake.png", "fake.png"),
])
def test_a_bad_file_refuses_the_whole_batch_before_anything_runs(tmp_path, name, problem):
    from compare.batch_files import load_prompt_files

    folder = tmp_path / "job"
    folder.mkdir()
    (tmp_path / "outside.png").write_bytes(_png())
    (folder / "link.png").symlink_to(tmp_path / "outside.png")
    (folder / "fake.png").write_bytes(b"MZ\x90\x00" + bytes(range(200)))  # an executable named .png
    (folder / "ok.png").write_bytes(_png())
    path = _prompts_with_files(folder, [{"id": "ok", "prompt": "fine", "files": ["ok.png"]},
                                        {"id": "bad", "prompt": "?", "files": [name]}])
    with pytest.raises(BatchError, match=r"^Nothing was run: prompt 'bad': .*" + problem.replace(".", r"\.")):
        load_prompt_files(load_prompts(path), path.parent)


@pytest.mark.parametrize("files", ['"chart.png"', '[""]', "[1]", "{}"])
def test_files_must_be_a_list_of_names(files):
    with pytest.raises(PromptFileError, match=r'line 1: "files" must be a list of file names'):
        parse_prompts('{"prompt": "x", "files": ' + files + "}", fmt="jsonl")


async def test_a_pair_whose_model_cannot_read_the_files_is_an_error_row_that_calls_nothing(registry, fake_server, tmp_path):
    from compare.batch_files import load_prompt_files

    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "chart.png").write_bytes(_png(50, 20))
    prompts = load_prompts(_prompts_with_files(folder, [{"id": "img", "prompt": "Chart?", "files": ["chart.png"]},
                                                        {"id": "txt", "prompt": "Plain"}]))
    files = load_prompt_files(prompts, folder)
    model = "gpt-batch-noeyes"  # a compatible endpoint's model: no vision unless models.toml says so
    fake_server.set_scenario(model, Scenario(tokens=4))
    summary = await run_batch(registry, prompts, ["demo:parley-demo", f"openai:{model}"], out_path=tmp_path / "r.jsonl",
                              files=files, policy=FAST)
    rows = {(r["prompt_id"], r["model"]): r for r in summary.rows}
    demo = rows[("img", "demo:parley-demo")]
    assert demo["error"] is None and "chart\\.png" in demo["text"] and "50×20" in demo["text"] and demo["files"] == ["chart.png"]
    refused = rows[("img", f"openai:{model}")]
    assert refused["finish_reason"] == "error" and refused["error_kind"] == "unsupported_file" and "cannot read images" in refused["error"]
    assert "demo:parley-demo" in refused["error"] and refused["cost"] is None and refused["output_tokens"] is None
    assert rows[("txt", f"openai:{model}")]["error"] is None
    assert posts(fake_server, model) == 1, "only the text prompt called the model"
    with pytest.raises(BatchError, match="were not loaded"):
        await run_batch(registry, prompts, ["demo:parley-demo"], out_path=tmp_path / "r2.jsonl")


def test_cli_sends_the_files_and_a_bad_one_stops_it_up_front(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PARLEY_PRICES_FILE", raising=False)
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "chart.png").write_bytes(_png(64, 32))
    _prompts_with_files(folder, [{"id": "q", "prompt": "What is this?", "files": ["chart.png"]}])
    code = main(["job/prompts.jsonl", "--models", "demo:parley-demo", "--out", "r.jsonl", "--max-tokens", "400"])
    assert code == 0, capsys.readouterr().err
    (row,) = read_results(tmp_path / "r.jsonl")
    assert row["files"] == ["chart.png"] and "chart\\.png" in row["text"] and "64×32" in row["text"]

    _prompts_with_files(folder, [{"id": "q", "prompt": "What is this?", "files": ["../r.jsonl"]}])
    monkeypatch.setenv("MAX_FILE_MB", "0.00001")
    assert main(["job/prompts.jsonl", "--models", "demo:parley-demo", "--out", "r2.jsonl"]) == 2
    assert "outside the prompts file's folder" in capsys.readouterr().err and not (tmp_path / "r2.jsonl").exists()
    _prompts_with_files(folder, [{"id": "q", "prompt": "What is this?", "files": ["chart.png"]}])
    assert main(["job/prompts.jsonl", "--models", "demo:parley-demo", "--out", "r2.jsonl"]) == 2
    assert "chart.png is 0.0 MB" in capsys.readouterr().err and not (tmp_path / "r2.jsonl").exists()
