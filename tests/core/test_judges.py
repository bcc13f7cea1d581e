"""The judges use case (core.judges.Judges) without Gradio: real storage (SQLite, and PostgreSQL when
TEST_DATABASE_URL is set), the app's Services and rate limiter, and judges that are fake OpenAI models
scripted on the fake server (registered the way every provider is: through the registry)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from chat.registry import Registry, Settings
from compare.judging import DEFAULT_PAIR_TEMPLATE, FLAG_MIN_N
from compare.pricing import Price, PriceTable
from core.compare import Comparisons
from core.config import AppConfig
from core.judges import JudgeProblem, Judges
from core.services import Services
from storage import judges as store
from tests.fakes import Scenario

ALICE = "user:alice"
BOB = "user:bob"
PRICES = PriceTable({"openai:jdg-*": Price(1.0, 2.0), "openai:gpt-jdg-*": Price(0.0, 0.0)})
QUESTION = "What is the capital of France?"
ANSWERS = {"gpt-jdg-good": "The capital of France is Paris.", "gpt-jdg-poor": "France has many lovely cities."}
MODELS = [f"openai:{m}" for m in ANSWERS]


@pytest.fixture
def make(engine: sa.Engine, fake_server: Any) -> Iterator[Callable[..., tuple[Comparisons, Judges]]]:
    """The compare and judges use cases over the fake OpenAI server; keyword arguments are app settings."""
    for name, text in ANSWERS.items():
        fake_server.set_scenario(name, Scenario(text=text))
    # A judge with a fixed left-position bias: whatever it is shown, answer 1 wins.
    fake_server.set_scenario("jdg-left", Scenario(text="Answer 1 is clearly better. [[1]]"))
    # A judge that calls every pair a tie, in either order: consistent.
    fake_server.set_scenario("jdg-fair", Scenario(text="Both are fine. [[tie]]"))
    built: list[Services] = []

    def build(**settings: str) -> tuple[Comparisons, Judges]:
        env = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": fake_server.openai_base_url, "RATE_LIMIT": "1000/minute",
               **settings}
        services = Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env)), engine)
        built.append(services)
        return Comparisons(services, PRICES), Judges(services, PRICES)

    yield build
    for services in built:
        services.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def judge_posts(server: Any, model: str) -> list[Any]:
    return [r for r in server.requests if r.model == model and r.method == "POST"]


def compared(comparisons: Comparisons, owner: str = ALICE) -> tuple[str, dict[str, int]]:
    """One stored comparison of the two models; returns its id and each model's pane slot."""
    items = run(comparisons.compare(owner=owner, request=None, message=QUESTION, models=MODELS))
    latest = run(comparisons.s.db(_latest_id, owner=owner))
    return latest, {i["model"]: i["position"] for i in items}


def _latest_id(*, session: Any, owner: str) -> str:
    from storage.models import Comparison, table_of

    c = table_of(Comparison).c
    return str(session.execute(sa.select(c.id).where(c.owner == owner).order_by(c.created_at.desc()).limit(1)).scalar_one())


def test_a_left_biased_judge_is_inconsistent_every_time_ties_and_is_flagged(make: Callable[..., Any], fake_server: Any) -> None:
    comparisons, judges = make()
    for _ in range(FLAG_MIN_N):
        cid, slots = compared(comparisons)
        # The user always prefers the good answer, wherever it sat.
        run(comparisons.vote(owner=ALICE, comparison_id=cid, choice=str(slots["openai:gpt-jdg-good"]), panes=2))
        result = run(judges.judge_comparison(owner=ALICE, request=None, comparison_id=cid, judges=["openai:jdg-left"]))
        (v,) = result.verdicts
        assert (v["verdict_ab"], v["verdict_ba"]) == ("1", "1")
        assert v["final"] == "tie" and v["consistent"] is False, "a verdict that flips with the order is a tie"
        assert result.calls == 2 and v["cost"] is not None and v["cost"] > 0

    board = run(judges.board(owner=ALICE)).as_dict()
    (audit,) = board["agreement"]
    assert audit["judge"] == "openai:jdg-left" and audit["verdicts"] == FLAG_MIN_N
    assert audit["consistency"] == 0.0 and audit["both_orders"] == FLAG_MIN_N
    # Every verdict a tie, every vote decisive: no agreement, and kappa 0 (p_e = 1·0 + 0 + 0).
    assert audit["n"] == FLAG_MIN_N and audit["agreement"] == 0.0 and audit["kappa"] == 0.0
    assert audit["flagged"] and len(audit["reasons"]) == 2
    ratings = board["judges"]["openai:jdg-left"]["ratings"]
    assert {r["model"] for r in ratings} == set(MODELS) and all(r["win_rate"] == 0.5 for r in ratings)


def test_judges_never_see_model_names_and_the_template_is_stored(make: Callable[..., Any], fake_server: Any) -> None:
    comparisons, judges = make()
    cid, _ = compared(comparisons)
    before = len(judge_posts(fake_server, "jdg-fair"))
    template = DEFAULT_PAIR_TEMPLATE.replace("impartial judge", "impartial judge of geography")
    run(judges.judge_comparison(owner=ALICE, request=None, comparison_id=cid, judges="openai:jdg-fair", template=template))
    sent = judge_posts(fake_server, "jdg-fair")[before:]
    assert len(sent) == 2, "one request per order"
    bodies = [json.dumps(r.json) for r in sent]
    for body in bodies:
        assert QUESTION in body and all(a in body for a in ANSWERS.values())
        for name in ("gpt-jdg-good", "gpt-jdg-poor", "openai", "OpenAI"):
            assert name not in body, f"the judge was told {name!r}"
    contents = [r.json["messages"][-1]["content"] for r in sent]
    orders = [(c.index(ANSWERS["gpt-jdg-good"]) < c.index(ANSWERS["gpt-jdg-poor"])) for c in contents]
    assert sorted(orders) == [False, True], "both orders were asked"
    (stored,) = run(judges.verdicts(owner=ALICE, comparison_id=cid))
    assert stored.template == template.strip() and stored.final == "tie" and stored.consistent is True
    assert {stored.model_a, stored.model_b} == set(MODELS) and stored.raw_ab and stored.raw_ba


def test_judge_verdicts_leave_the_human_leaderboard_unchanged(make: Callable[..., Any]) -> None:
    comparisons, judges = make()
    cid, slots = compared(comparisons)
    run(comparisons.vote(owner=ALICE, comparison_id=cid, choice=str(slots["openai:gpt-jdg-poor"]), panes=2))
    other, _ = compared(comparisons)  # not voted: judges only
    before = run(comparisons.standings(owner=ALICE, blind_only=False)).result.as_dict()
    for c in (cid, other):
        run(judges.judge_comparison(owner=ALICE, request=None, comparison_id=c, judges=["openai:jdg-left", "openai:jdg-fair"]))
    after = run(comparisons.standings(owner=ALICE, blind_only=False)).result.as_dict()
    assert after == before and after["battles"] == 1
    board = run(judges.board(owner=ALICE)).as_dict()
    assert set(board["judges"]) == {"openai:jdg-left", "openai:jdg-fair"}
    assert all(j["battles"] == 2 for j in board["judges"].values()), "each judge ranks its own verdicts only"


def test_a_judge_run_over_the_rate_limit_is_refused_and_sends_nothing(make: Callable[..., Any], fake_server: Any) -> None:
    comparisons, judges = make(RATE_LIMIT="5/minute")
    cid, _ = compared(comparisons)  # 2 calls: 3 left
    sent = {m: len(judge_posts(fake_server, m)) for m in ("jdg-left", "jdg-fair")}
    with pytest.raises(JudgeProblem, match="4 provider calls"):
        run(judges.judge_comparison(owner=ALICE, request=None, comparison_id=cid, judges=["openai:jdg-left", "openai:jdg-fair"]))
    assert {m: len(judge_posts(fake_server, m)) for m in sent} == sent, "nothing was sent"
    assert run(judges.verdicts(owner=ALICE, comparison_id=cid)) == []
    # The refusal charged nothing: one judge (2 calls) still fits.
    run(judges.judge_comparison(owner=ALICE, request=None, comparison_id=cid, judges=["openai:jdg-fair"]))
    assert len(run(judges.verdicts(owner=ALICE, comparison_id=cid))) == 1


def test_another_owner_can_neither_judge_nor_read_your_comparison(make: Callable[..., Any], fake_server: Any) -> None:
    comparisons, judges = make()
    cid, _ = compared(comparisons)
    run(judges.judge_comparison(owner=ALICE, request=None, comparison_id=cid, judges=["openai:jdg-fair"]))
    sent = len(judge_posts(fake_server, "jdg-left"))
    with pytest.raises(JudgeProblem, match="No comparison"):
        run(judges.judge_comparison(owner=BOB, request=None, comparison_id=cid, judges=["openai:jdg-left"]))
    assert len(judge_posts(fake_server, "jdg-left")) == sent
    with pytest.raises(JudgeProblem, match="No comparison"):
        run(judges.verdicts(owner=BOB, comparison_id=cid))
    assert run(judges.board(owner=BOB)).as_dict() == {"judges": {}, "agreement": []}
    with pytest.raises(store.NotFound):  # storage refuses a verdict on another owner's comparison too
        run(judges.s.db(store.add_verdicts, owner=BOB, verdicts=[{
            "comparison_id": cid, "judge": "openai:jdg-left", "template": "t", "template_hash": "h",
            "model_a": MODELS[0], "model_b": MODELS[1], "final": "a", "raw_ab": "[[1]]"}]))
    assert len(run(judges.verdicts(owner=ALICE, comparison_id=cid))) == 1


def test_a_blind_comparisons_verdicts_name_no_model_until_the_vote(make: Callable[..., Any]) -> None:
    comparisons, judges = make()
    panes = comparisons.api_panes(MODELS)
    started = comparisons.start(ALICE, QUESTION, panes, blind=True)
    run(started.run())
    cid = str(started.ids.comparison_id)
    result = run(judges.judge_comparison(owner=ALICE, request=None, comparison_id=cid, judges=["openai:jdg-left"]))
    assert result.hidden
    shown = json.dumps(result.as_dict())
    assert "gpt-jdg" not in shown and result.verdicts[0]["pane_a"] == "Model A"
    (stored,) = run(judges.verdicts(owner=ALICE, comparison_id=cid))
    assert stored.model_a is None and stored.model_b is None and stored.human is None
    assert run(judges.board(owner=ALICE)).as_dict() == {"judges": {}, "agreement": []}, "not ranked before the vote"
    run(comparisons.vote(owner=ALICE, comparison_id=cid, choice="0", panes=2))
    (stored,) = run(judges.verdicts(owner=ALICE, comparison_id=cid))
    assert {stored.model_a, stored.model_b} == set(MODELS) and stored.human == "a"
    assert "openai:jdg-left" in run(judges.board(owner=ALICE)).as_dict()["judges"]


def test_bad_judges_and_templates_are_refused_before_any_call(make: Callable[..., Any], fake_server: Any) -> None:
    comparisons, judges = make()
    cid, _ = compared(comparisons)
    sent = len(fake_server.requests)
    for kwargs, message in ((dict(judges=[]), "at least one"), (dict(judges=["nope:x"]), "Judge nope:x"),
                            (dict(judges=["openai:jdg-fair"] * 1 + [f"openai:jdg-{i}" for i in range(4)]), "at most"),
                            (dict(judges=["openai:jdg-fair"], template="Judge {question} only"), "{answer_1}")):
        with pytest.raises(JudgeProblem, match=message):
            run(judges.judge_comparison(owner=ALICE, request=None, comparison_id=cid, **kwargs))
    assert len(fake_server.requests) == sent
