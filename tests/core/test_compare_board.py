"""Positions and the leaderboard from stored votes (core/compare.py, core/compare_board.py) over real storage
(SQLite, and PostgreSQL when TEST_DATABASE_URL is set) and the demo provider: every run's models take random
panes, the votes know which pane was A and carry the replies, and the board's result has every part."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import core.compare
from chat.registry import Registry, Settings
from chat.types import Params
from compare.pricing import Price, PriceTable
from core.compare import Comparisons, PaneInput
from core.compare_board import battles_of, build_board
from core.config import AppConfig
from core.services import Services
from storage import repository as repo
from storage.models import VoteRecord

ALICE = "user:alice-board"
DEMO = "demo:parley-demo"


@pytest.fixture
def comparisons(engine: sa.Engine) -> Iterator[Comparisons]:
    env: dict[str, str] = {}
    services = Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env)), engine)
    yield Comparisons(services, PriceTable({"demo:*": Price(0, 0)}))
    services.close()


def reversed_order(order: list[int]) -> None:
    order.reverse()


def test_a_plain_run_puts_its_models_in_random_panes(comparisons: Comparisons, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.compare, "shuffle", reversed_order)
    inputs = [PaneInput(DEMO, "first", None), PaneInput(DEMO, "second", None)]
    session: dict[str, Any] = {}
    panes = comparisons.session_panes(session, inputs, Params(), "", blind=False)
    assert session["order"] == [1, 0] and [p.system_prompt for p in panes] == ["second", "first"]


def test_the_api_keeps_the_models_order_and_says_which_pane_each_had(comparisons: Comparisons,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.compare, "shuffle", reversed_order)
    owner = f"user:{uuid.uuid4().hex[:8]}"
    items = asyncio.run(comparisons.compare(owner=owner, request=None, message="Say something", models=[DEMO, DEMO]))
    assert [i["position"] for i in items] == [1, 0]
    (detail,) = asyncio.run(comparisons.s.db(repo.export_comparisons, owner=owner))
    assert [p.message.content for p in detail.panes] == [items[1]["text"], items[0]["text"]]


def test_votes_carry_the_replies_by_slot_and_the_board_reports_every_part(comparisons: Comparisons) -> None:
    owner = f"user:{uuid.uuid4().hex[:8]}"
    inputs = [PaneInput(DEMO, "", 0.2), PaneInput(DEMO, "", 0.9)]
    panes = comparisons.session_panes({}, inputs, Params(), "", blind=False)
    started = comparisons.start(owner, "Hello there", panes)
    results = asyncio.run(started.run())
    assert started.ids is not None
    asyncio.run(comparisons.vote(owner=owner, comparison_id=str(started.ids.comparison_id), choice="0", panes=2))
    [record] = asyncio.run(comparisons.s.db(repo.comparison_votes, owner=owner))
    assert record.texts == [r.text for r in results] and all(record.texts)
    standings = asyncio.run(comparisons.standings(owner=owner, blind_only=False, style=True, pair=(DEMO, DEMO)))
    out = standings.result.as_dict()
    # The same model twice is a parameter sweep, not a battle: an empty but well-formed board.
    assert out["battles"] == 0 and out["position_bias"]["pane_a_share"] is None and out["pair"] is None


def record(models: list[str], winner: int | None, texts: list[str] | None = None, verdict: str = "slot") -> VoteRecord:
    return VoteRecord(comparison_id=uuid.uuid4(), models=models, verdict=verdict, winner_slot=winner, blind=True,
                      texts=texts or [])


def test_battles_know_which_side_was_pane_a() -> None:
    three = battles_of(record(["x", "y", "z"], 1))
    assert [(b.model_a, b.model_b, b.outcome, b.position) for b in three] == [("y", "x", "a", -1), ("y", "z", "a", 0)]
    ties = battles_of(record(["x", "y", "z"], None, verdict="tie"))
    assert [b.position for b in ties] == [1, 1, 0]
    styled = battles_of(record(["x", "y"], 0, ["# Big\n- a\n- b", "plain"]), with_style=True)
    assert styled[0].style_a == (13.0, 1.0, 2.0, 0.0) and styled[0].style_b == (5.0, 0.0, 0.0, 0.0)


def test_board_result_for_the_api() -> None:
    records = ([record(["good", "bad"], 0, ["**yes**", "no"])] * 12 + [record(["bad", "good"], 1, ["no", "- yes"])] * 10
               + [record(["bad", "good"], 0, ["no", "yes"])] * 4 + [record(["good", "mid"], 1, ["a", "b"])] * 3
               + [record(["mid", "good"], 1, ["a", "b"])] * 3)  # fmt: skip
    board = build_board(records, rounds=40, style=True, pair=("mid", "bad"))
    out = board.as_dict()
    assert out["battles"] == 32 and [r["model"] for r in out["ratings"]][0] == "good"
    assert set(out["ratings"][0]) >= {"rank", "model", "rating", "ci", "votes", "win_rate", "style_rating", "style_ci",
                                      "style_rank"}
    bias = out["position_bias"]
    assert bias["decisive_battles"] == 32 and bias["pane_a_share"] == pytest.approx(16 / 32)
    assert out["top_pair"]["a"] == "good" and out["top_pair"]["votes_needed"] > 0
    assert out["pair"]["a"] == "mid" and out["pair"]["decisive_votes"] == 0
    assert out["flips_to_change_first"]["flips"] >= 1
    assert set(out["style_coefficients"]) == {"length", "headers", "lists", "bold"}
