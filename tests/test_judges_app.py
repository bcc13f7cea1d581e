"""The judges through the running app: `/compare` gives a comparison id, `/judge` asks judges about it
(fake OpenAI models on the fake server), `/judge_board` ranks and audits them; another client session
(another owner) can neither judge nor see it."""

from __future__ import annotations

import json

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.apphelpers import app_env, in_process_app
from tests.fakes import Scenario

ANSWERS = {"gpt-jdgapp-one": "Two plus two is four.", "gpt-jdgapp-two": "It is 5."}
MODELS = [f"openai:{m}" for m in ANSWERS]


@pytest.fixture(scope="module")
def app(fake_server, tmp_path_factory):
    for name, text in ANSWERS.items():
        fake_server.set_scenario(name, Scenario(text=text))
    fake_server.set_scenario("jdgapp-judge", Scenario(text="The second answer is wrong. [[1]]"))
    db = tmp_path_factory.mktemp("judgesdb") / "parley.db"
    with in_process_app(app_env(fake_server, f"sqlite:///{db}")) as (url, services):
        yield url


def test_judge_and_judge_board_through_the_api(app, fake_server) -> None:
    client = Client(app, verbose=False)
    items = client.predict(message="What is 2+2?", models=MODELS, api_name="/compare")
    cid = items[0]["comparison_id"]
    assert cid and all(i["comparison_id"] == cid for i in items)

    out = client.predict(comparison_id=cid, judges=["openai:jdgapp-judge"], prompt="", api_name="/judge")
    assert out["comparison_id"] == cid and out["calls"] == 2 and not out["names_hidden"]
    (v,) = out["verdicts"]
    assert (v["verdict_ab"], v["verdict_ba"]) == ("1", "1") and v["final"] == "tie" and v["consistent"] is False
    assert {v["model_a"], v["model_b"]} == set(MODELS)
    judged = [r for r in fake_server.requests if r.model == "jdgapp-judge" and r.method == "POST"]
    assert len(judged) == 2 and all("gpt-jdgapp" not in json.dumps(r.json) for r in judged)

    board = client.predict(api_name="/judge_board")
    assert set(board["judges"]) == {"openai:jdgapp-judge"}
    (audit,) = board["agreement"]
    assert audit["consistency"] == 0.0 and audit["n"] == 0 and audit["verdicts"] == 1  # no votes through the API

    stranger = Client(app, verbose=False)  # another session: another owner
    with pytest.raises(AppError, match="No comparison"):
        stranger.predict(comparison_id=cid, judges=["openai:jdgapp-judge"], prompt="", api_name="/judge")
    assert stranger.predict(api_name="/judge_board") == {"judges": {}, "agreement": []}
    with pytest.raises(AppError, match="answer_1"):
        client.predict(comparison_id=cid, judges=["openai:jdgapp-judge"], prompt="Just {question}", api_name="/judge")
