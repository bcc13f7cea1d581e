"""The compare use cases (core.compare.Comparisons) without Gradio: real storage (SQLite, and PostgreSQL when
TEST_DATABASE_URL is set), the app's own Services and rate limiter, the fake provider servers and the demo provider."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from chat.registry import Registry, Settings
from chat.types import Params
from compare.pricing import Price, PriceTable
from core.compare import CompareProblem, Comparisons, PaneInput
from core.config import AppConfig
from core.services import Services
from storage import repository as repo
from storage.models import ComparisonDetail, ComparisonIds
from tests.fakes import Scenario

ALICE = "user:alice"
PRICES = PriceTable({"openai:gpt-cmp*": Price(1.0, 2.0), "demo:*": Price(0, 0)})


@pytest.fixture
def make_comparisons(engine: sa.Engine, fake_server: Any) -> Iterator[Callable[..., Comparisons]]:
    """Comparisons over the fake OpenAI server and the demo provider; keyword arguments are app settings."""
    for name in ("gpt-cmp-usage", "gpt-cmp-blind", *(f"gpt-cmp-four-{i}" for i in range(4))):
        fake_server.set_scenario(name, Scenario(tokens=8))
    built: list[Services] = []

    def make(**settings: str) -> Comparisons:
        env = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": fake_server.openai_base_url, **settings}
        services = Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env)), engine)
        built.append(services)
        return Comparisons(services, PRICES)

    yield make
    for services in built:
        services.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def exported(comparisons: Comparisons, owner: str = ALICE) -> list[ComparisonDetail]:
    return run(comparisons.s.db(repo.export_comparisons, owner=owner))


def posts(server: Any, model: str) -> int:
    return sum(1 for r in server.requests if r.model == model and r.method == "POST")


def test_a_two_pane_run_is_saved_with_its_usage_and_cost(make_comparisons: Callable[..., Comparisons]) -> None:
    comparisons = make_comparisons()
    items = run(comparisons.compare(owner=ALICE, request=None, message="  Name a prime.  ",
                                    models=["openai:gpt-cmp-usage", "demo:parley-demo"], system_prompt="Be brief."))
    assert [i["model"] for i in items] == ["openai:gpt-cmp-usage", "demo:parley-demo"]
    for item in items:
        assert item["error"] is None and item["finish_reason"] == "stop" and item["text"]
        assert item["output_tokens"] > 0 and item["input_tokens"] > 0 and item["tools"] == []
    oai = items[0]
    assert oai["cost"] == pytest.approx((oai["input_tokens"] * 1.0 + oai["output_tokens"] * 2.0) / 1e6)

    (detail,) = exported(comparisons)
    assert detail.prompt == "Name a prime." and not detail.blind and detail.vote is None
    for item in items:  # the models took random panes: `position` is the slot each was given
        pane = detail.panes[item["position"]]
        assert f"{pane.message.provider}:{pane.message.model}" == item["model"]
        assert pane.message.content == item["text"] and pane.system_prompt == "Be brief."
        assert pane.message.input_tokens == item["input_tokens"] and pane.message.output_tokens == item["output_tokens"]
        assert pane.message.usage_estimated == item["usage_estimated"]
        assert pane.cost_usd == pytest.approx(item["cost"])


def test_a_blind_run_keeps_its_models_until_the_vote(make_comparisons: Callable[..., Comparisons]) -> None:
    comparisons = make_comparisons()
    session: dict[str, Any] = {}
    inputs = [PaneInput("openai:gpt-cmp-blind", "", None), PaneInput("demo:parley-demo", "", 0.5)]
    panes = comparisons.session_panes(session, inputs, Params(), "", blind=True)
    assert session["blind"] and not session["revealed"] and sorted(session["order"]) == [0, 1]
    assert [p.ref for p in panes] == [inputs[i].ref for i in session["order"]]  # display order is the shuffled one

    run_ = comparisons.start(ALICE, "Which is bigger, 2 or 3?", panes, blind=True)
    results = run(run_.run())
    assert all(r.text for r in results) and run_.saved is True
    assert isinstance(run_.ids, ComparisonIds)
    comparison_id = str(run_.ids.comparison_id)

    (before,) = exported(comparisons)
    assert before.blind and before.vote is None
    assert all(p.message.provider is None and p.message.model is None for p in before.panes), "withheld until the vote"

    with pytest.raises(CompareProblem, match="no such pane"):
        run(comparisons.vote(owner=ALICE, comparison_id=comparison_id, choice="2", panes=2))
    assert run(comparisons.vote(owner=ALICE, comparison_id=comparison_id, choice="1", panes=2)) == ("slot", 1)
    with pytest.raises(CompareProblem, match="could not be saved"):  # one vote per run
        run(comparisons.vote(owner=ALICE, comparison_id=comparison_id, choice="tie", panes=2))

    (after,) = exported(comparisons)
    assert after.vote is not None and after.vote.verdict == "slot" and after.vote.winner_slot == 1
    assert [f"{p.message.provider}:{p.message.model}" for p in after.panes] == [p.ref for p in panes]
    standings = run(comparisons.standings(owner=ALICE, blind_only=True))
    assert standings.votes == 1 and not standings.shared
    assert {r.model for r in standings.board.ratings} == {p.ref for p in panes}
    assert standings.board.ratings[0].model == panes[1].ref  # the winner ranks first

    # The same panes and settings again: a follow-up in the same (shuffled) panes, with their history.
    again = comparisons.session_panes(session, inputs, Params(), "", blind=True)
    assert [p.ref for p in again] == [p.ref for p in panes]
    assert all(p.conversation_id is None for p in again)  # the session keeps them; the tab stores them there


def test_four_panes_charge_four_calls_and_a_refusal_starts_nothing(make_comparisons: Callable[..., Comparisons],
                                                                    fake_server: Any) -> None:
    comparisons = make_comparisons(RATE_LIMIT="5/minute")
    models = [f"openai:gpt-cmp-four-{i}" for i in range(4)]
    sent = {m: posts(fake_server, m.split(":", 1)[1]) for m in models}  # the fake server outlives this test
    items = run(comparisons.compare(owner=ALICE, request=None, message="hello", models=models))
    assert [i["model"] for i in items] == models and all(i["error"] is None for i in items)
    assert all(posts(fake_server, m.split(":", 1)[1]) == sent[m] + 1 for m in models)

    # One call is left: four panes are refused as a whole, nothing is sent or saved...
    with pytest.raises(CompareProblem):
        run(comparisons.compare(owner=ALICE, request=None, message="again", models=models))
    # ...and the refusal charged nothing: the one call left is still there, then the budget is spent.
    with pytest.raises(CompareProblem):
        run(comparisons.compare(owner=ALICE, request=None, message="two", models=models[:2]))
    assert all(posts(fake_server, m.split(":", 1)[1]) == sent[m] + 1 for m in models)
    assert [d.prompt for d in exported(comparisons)] == ["hello"]
    verdict = run(comparisons.s.limiter.charge(comparisons.s.limiter.identity(None, ALICE), calls=1))
    assert verdict.allowed, "the refused runs charged nothing: one call of five is left"
    assert not run(comparisons.s.limiter.charge(comparisons.s.limiter.identity(None, ALICE), calls=1)).allowed


def test_bad_inputs_are_refused_before_any_call(make_comparisons: Callable[..., Comparisons], fake_server: Any) -> None:
    comparisons = make_comparisons()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"message": "   ", "models": ["demo:parley-demo"] * 2}, "empty prompt"),
        ({"message": "hi", "models": ["demo:parley-demo"]}, "2 to 4 models"),
        ({"message": "hi", "models": ["demo:parley-demo"] * 5}, "2 to 4 models"),
        # One model not set up fails its own pane (tests/core/test_rough_edges_core.py); none usable: nothing runs.
        ({"message": "hi", "models": ["nowhere:model", "elsewhere:model"]}, "Model 1"),
        ({"message": "hi", "models": ["demo:parley-demo", ""]}, "Model 2"),
        ({"message": "x" * (comparisons.s.config.max_message_chars + 1), "models": ["demo:parley-demo"] * 2}, "limit"),
        # What the API's JSON can carry besides text gets a message, not a crash in clean_text.
        ({"message": 42, "models": ["demo:parley-demo"] * 2}, "prompt must be text"),
        ({"message": {"text": "hi"}, "models": ["demo:parley-demo"] * 2}, "prompt must be text"),
        ({"message": "hi", "models": ["demo:parley-demo"] * 2, "system_prompt": ["be brief"]}, "system prompt must be text"),
    ]
    for kwargs, words in cases:
        with pytest.raises(CompareProblem, match=words):
            run(comparisons.compare(owner=ALICE, request=None, **kwargs))
    assert exported(comparisons) == []
    # A comma-separated string is a list of models, as the API has always taken it.
    items = run(comparisons.compare(owner=ALICE, request=None, message="hi", models="demo:parley-demo,demo:parley-demo"))
    assert len(items) == 2


def test_a_flagged_prompt_is_refused_whole_and_reaches_no_model(make_comparisons: Callable[..., Comparisons],
                                                               fake_server: Any) -> None:
    """MODERATION=openai checks a compare prompt as it checks a chat message (it did not: the prompt went to
    every pane); refused, nothing is stored or sent, through the API path and the tab's (charge with the prompt)."""
    comparisons = make_comparisons(MODERATION="openai")
    models = ["openai:gpt-cmp-four-0", "openai:gpt-cmp-four-1"]
    names = [m.split(":", 1)[1] for m in models]
    before = [posts(fake_server, n) for n in names]
    with pytest.raises(CompareProblem, match=r"flagged by the moderation check \(harassment\).*not sent"):
        run(comparisons.compare(owner=ALICE, request=None, message="please FLAGME now", models=models))
    assert [posts(fake_server, n) for n in names] == before
    assert not [c for c in exported(comparisons) if c.prompt == "please FLAGME now"]
    panes = comparisons.api_panes(models)
    with pytest.raises(CompareProblem, match="flagged"):
        run(comparisons.charge(None, ALICE, panes, prompt="FLAGME in the tab"))
    items = run(comparisons.compare(owner=ALICE, request=None, message="a harmless prompt", models=models))
    assert [posts(fake_server, n) - b for n, b in zip(names, before, strict=True)] == [1, 1] and all(i["text"] for i in items)
