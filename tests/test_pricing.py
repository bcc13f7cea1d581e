"""The price table: lookups with wildcards and dated snapshots, costs, files, editable rows."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from chat.errors import ChatError
from compare.pricing import DEFAULT_PRICES, ROW_COLUMNS, Price, PriceError, PriceTable, cost


def test_known_unknown_and_demo_costs():
    # 1M input at $0.15 + 1M output at $0.60
    assert cost("openai:gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert cost("openai:gpt-4o-mini", 1000, 500) == pytest.approx((1000 * 0.15 + 500 * 0.60) / 1e6)
    assert cost("openai:no-such-model", 10, 10) is None
    assert cost("ollama:llama3.2", 10, 10) is None
    assert cost("demo:parley-demo", 123, 456) == 0.0
    assert cost("demo:parley-demo", None, None) == 0.0  # free whatever the usage
    assert cost("openai:gpt-4o-mini", None, 10) is None  # unknown usage: unknown cost, not a guess


def test_dated_snapshots_and_wildcards():
    t = PriceTable()
    assert t.lookup("openai:gpt-4o-mini-2024-07-18") == t.lookup("openai:gpt-4o-mini")
    assert t.lookup("anthropic:claude-haiku-4-5-20251001") == DEFAULT_PRICES["anthropic:claude-haiku-4-5"]
    assert t.lookup("anthropic:claude-sonnet-4-6") == DEFAULT_PRICES["anthropic:claude-sonnet-4*"]
    # The most specific pattern wins, and an exact key beats any pattern.
    custom = PriceTable({"x:*": Price(1, 1), "x:big*": Price(5, 5), "x:big-one": Price(9, 9)})
    assert custom.lookup("x:small").input == 1
    assert custom.lookup("x:big-two").input == 5
    assert custom.lookup("x:big-one").input == 9
    assert custom.lookup("y:big") is None
    # gpt-4o must not pick up gpt-4o-mini's price or vice versa.
    assert t.lookup("openai:gpt-4o").input == 2.50 and t.lookup("openai:gpt-4o-mini").input == 0.15


def test_rows_round_trip_and_dataframe_input():
    t = PriceTable()
    rows = t.to_rows()
    assert list(rows[0]) == list(ROW_COLUMNS)
    assert PriceTable.from_rows(rows) == t
    assert PriceTable.from_rows(pd.DataFrame(rows)) == t
    # Lists in column order, numbers as text (as an edited table may send them), blank rows skipped.
    edited = PriceTable.from_rows([["openai:gpt-4o-mini", "0.2", " $1.00 ", ""], ["", None, None, None],
                                   ["ollama:*", 0, 0]])
    assert edited.lookup("openai:gpt-4o-mini") == Price(0.2, 1.0)
    assert edited.cost("ollama:qwen2.5:7b", 10, 10) == 0.0
    assert len(edited) == 2


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["openai:x", -1, 1]], r"Row 1 \(openai:x\): the input price cannot be negative"),
        ([["openai:x", 1, "lots"]], r"Row 1 \(openai:x\): the output price must be a number"),
        ([["openai:x", 1, float("inf")]], "finite"),
        ([["openai:x", "", 1]], "input price is empty"),
        ([["openai:x", 1, 1], ["openai:x", 2, 2]], "Row 2 repeats 'openai:x' \\(first on row 1\\)"),
        ([["gpt-4o", 1, 1]], "Row 1: 'gpt-4o' is not a provider:model"),
        ([[None, 1, 1]], "Row 1: the model is empty"),
        ([["openai:x", True, 1]], "must be a number"),
        (["nope"], "not a row"),
    ],
)
def test_rows_are_validated_with_clear_errors(rows, message):
    with pytest.raises(PriceError, match=message):
        PriceTable.from_rows(rows)


def test_price_error_is_a_chat_error_and_a_value_error():
    assert issubclass(PriceError, ChatError) and issubclass(PriceError, ValueError)


def test_toml_file_merges_over_defaults(tmp_path):
    f = tmp_path / "prices.toml"
    f.write_text('[prices]\n"openai:gpt-4o-mini" = { input = 1, output = 2 }\n"ollama:*" = { input = 0, output = 0, note = "local" }\n')
    t = PriceTable.from_file(f)
    assert t.lookup("openai:gpt-4o-mini") == Price(1.0, 2.0)
    assert t.lookup("ollama:llama3.2").note == "local"
    assert t.lookup("openai:gpt-4.1") == DEFAULT_PRICES["openai:gpt-4.1"]  # untouched defaults stay


def test_json_file_and_replace(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"replace": True, "prices": {"acme:m1": {"input": 3, "output": 4}}}))
    t = PriceTable.from_file(f)
    assert len(t) == 1 and t.cost("acme:m1", 1_000_000, 0) == 3.0
    assert t.lookup("openai:gpt-4o-mini") is None
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"acme:m2": {"input": 1, "output": 1}}))
    assert PriceTable.from_file(bare).lookup("acme:m2") == Price(1, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[prices\n", "not valid TOML"),
        ('[prices]\n"openai:x" = { input = 1 }\n', "needs both `input` and `output`"),
        ('[prices]\n"openai:x" = { input = 1, output = -2 }\n', "'openai:x': output cannot be negative"),
        ('[prices]\n"openai:x" = { input = 1, output = 2, cached = 1 }\n', "unknown keys cached"),
        ('[prices]\n"openai:x" = 3\n', "must be a table"),
        ('[prices]\n"nocolon" = { input = 1, output = 2 }\n', "not a provider:model"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, text, message):
    f = tmp_path / "prices.toml"
    f.write_text(text)
    with pytest.raises(PriceError, match=message):
        PriceTable.from_file(f)


def test_from_env_reads_the_named_file_and_reports_problems(tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text('[prices]\n"acme:m" = { input = 1, output = 1 }\n')
    assert PriceTable.from_env({"PARLEY_PRICES_FILE": "mine.toml"}, cwd=tmp_path).lookup("acme:m") == Price(1, 1)

    missing = PriceTable.from_env({"PARLEY_PRICES_FILE": "gone.toml"}, cwd=tmp_path)
    assert missing == PriceTable() and "does not exist" in missing.problems[0]

    (tmp_path / "prices.toml").write_text('[prices]\n"acme:m" = { input = "x", output = 1 }\n')
    broken = PriceTable.from_env({}, cwd=tmp_path)  # ./prices.toml is read when no variable is set
    assert broken == PriceTable() and "must be a number" in broken.problems[0]

    assert PriceTable.from_env({}, cwd=tmp_path / "nowhere").problems == ()
