"""Issue 17's rough edges in the use cases, on real storage (SQLite, and PostgreSQL when TEST_DATABASE_URL is set):
the dashboard counts refusals and cut-off replies apart from errors (item 7), and the `/compare` use case gives
a model that is not set up an error of its own instead of refusing the whole call (item 8)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from compare.pricing import PriceTable
from core.compare import CompareProblem, Comparisons
from core.services import Services
from core.stats import Stats
from core.store import FLAGGED_ERROR, start_turn
from storage import repository as repo

ALICE = "user:alice"


def reply(engine: sa.Engine, model: str, finish_reason: str, error: str | None = None) -> None:
    """A one-turn chat whose reply ended with `finish_reason`."""
    provider, name = model.split(":", 1)
    with Session(engine) as session:
        ids = start_turn(session=session, owner=ALICE, conversation_id=None, history_user_texts=[], content="hi",
                         provider=provider, model=name, system_prompt="", params={})
        repo.finish_turn(session=session, owner=ALICE, message_id=ids.assistant_message_id, content="text",
                         finish_reason=finish_reason, provider=provider, model=name, input_tokens=5, output_tokens=20,
                         ttft_ms=100, duration_ms=600, error=error)


def test_refusals_and_cut_off_replies_are_counted_apart_from_errors(services: Services, engine: sa.Engine) -> None:
    # One model: two good replies, one refused by Parley's moderation (stored as it is stored by core.chat),
    # one whose prompt the provider filtered, one that failed, one at the token limit, one whose stream ended early.
    m = "demo:mixed"
    reply(engine, m, "stop")
    reply(engine, m, "stop")
    reply(engine, m, "content_filter", f"{FLAGGED_ERROR}: harassment")
    reply(engine, m, "content_filter", "OpenAI blocked this request for safety reasons. Rephrase the message.")
    reply(engine, m, "error", "OpenAI is overloaded or failing right now. Try again shortly.")
    reply(engine, m, "length")
    reply(engine, m, "truncated", "The reply from OpenAI was cut off (the stream ended without finishing).")
    reply(engine, "demo:clean", "stop")

    data = asyncio.run(Stats(services, prices=PriceTable({})).dashboard(ALICE, "Last hour"))
    rows = {f"{r['Provider']}:{r['Model']}": r for r in data.rows}
    mixed, clean = rows[m], rows["demo:clean"]
    assert mixed["Replies"] == 7
    assert mixed["Errors (%)"] == round(100 / 7, 1), "only the failed reply is an error"
    assert mixed["Refused (%)"] == round(200 / 7, 1), "moderation and the provider's filter are refusals"
    assert mixed["Truncated (%)"] == round(200 / 7, 1), "the token limit and an early end are cut off"
    assert (clean["Errors (%)"], clean["Refused (%)"], clean["Truncated (%)"]) == (0, 0, 0)
    assert (data.failed, data.refused, data.truncated) == (1, 2, 2)

    # The table shows all three; the outcome chart has one series per outcome, and nothing for a clean model.
    assert {"Errors (%)", "Refused (%)", "Truncated (%)"} <= set(data.frame().columns)
    outcomes = data.outcomes()
    assert set(outcomes["Outcome"]) == {"Error", "Refused", "Truncated"}
    assert set(outcomes["Label"]) == {m}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_compare_gives_a_model_that_is_not_set_up_an_error_and_runs_the_others(services: Services) -> None:
    comparisons = Comparisons(services, PriceTable({}))
    out = run(comparisons.compare(owner=ALICE, request=None, message="Say hi",
                                  models=["demo:parley-demo", "nosuch:model", "openai:gpt-test"]))
    # Answered in the order given; `position` is the pane each model had (every comparison shuffles them).
    assert sorted(o["position"] for o in out) == [0, 1, 2]
    good, unknown, unset = out
    assert good["error"] is None and good["finish_reason"] == "stop" and good["text"]
    assert unknown["finish_reason"] == "error" and "nosuch" in unknown["error"] and not unknown["text"]
    assert unset["finish_reason"] == "error" and "OpenAI" in unset["error"] and "OPENAI_API_KEY" in unset["error"]
    assert unknown["model"] == "nosuch:model" and unset["model"] == "openai:gpt-test"


@pytest.mark.parametrize("models, words", [
    (["nosuch:model", "other:model"], "Unknown provider"),  # nothing would run: the call is refused
    (["demo:parley-demo", "demo:" + "x" * 300], "characters long"),  # a malformed name is bad input
    (["demo:parley-demo", ""], "pick a model"),
])
def test_compare_still_refuses_a_call_where_nothing_would_run_or_a_name_is_malformed(services: Services, models: list[str],
                                                                                       words: str) -> None:
    with pytest.raises(CompareProblem, match=words):
        run(Comparisons(services, PriceTable({})).compare(owner=ALICE, request=None, message="hi", models=models))
