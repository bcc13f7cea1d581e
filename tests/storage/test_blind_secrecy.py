"""Blind secrecy in storage: nothing of a blind comparison without its vote names its models.

Issue 12, item 1: exports, the dashboard's statistics, search, conversation reads and the
comparison export all read through storage/blind.py's one definition; after the vote the runs
count and are named again.
"""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session

from storage import repository as repo
from storage.errors import InvalidInput, NotFound
from storage.models import ComparisonIds
from tests.storage.helpers import chat

OWNER = "alice"
#: Names that must not appear anywhere before the vote (provider, model and model version).
SECRETS = ("secretprov", "hidden-model-x", "otherprov", "hidden-model-y", "build-xyz-0427")
REPLIES = {0: "quokka reply from the first pane", 1: "quokka reply from the second pane"}
MODELS = ["secretprov:hidden-model-x", "otherprov:hidden-model-y"]


def blind_run(session: Session, *, blind: bool = True, prompt: str = "quokka question") -> ComparisonIds:
    """A finished blind (by default) run with a cost, an error and a tool call in its panes."""
    panes = [{"provider": ref.split(":")[0], "model": ref.split(":")[1], "params": {"temperature": 0.5},
              "system_prompt": f"system for {ref}"} for ref in MODELS]  # fmt: skip
    ids = repo.begin_comparison(session=session, owner=OWNER, prompt=prompt, panes=panes, blind=blind)
    for pane in ids.panes:
        repo.finish_turn(
            session=session, owner=OWNER, message_id=pane.assistant_message_id, content=REPLIES[pane.slot],
            finish_reason="stop" if pane.slot == 0 else "error", ttft_ms=4321 + pane.slot, duration_ms=9000,
            input_tokens=5, output_tokens=50, model_version="build-xyz-0427",
            error=None if pane.slot == 0 else "otherprov says hidden-model-y is overloaded",
            tool_calls=[{"id": "t1", "name": "calculator", "arguments": '{"q": "secretprov hidden-model-x"}',
                         "result": "ok"}],
        )  # fmt: skip
    repo.set_comparison_costs(session=session, owner=OWNER, comparison_id=ids.comparison_id, costs={0: 0.5, 1: 0.25})
    return ids


def assert_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text.lower(), f"{secret} is in {where} before the vote"


def assert_no_pane_text(text: str, where: str) -> None:
    for reply in REPLIES.values():
        assert reply not in text, f"a blind pane's reply is in {where}"


def test_whole_owner_exports_carry_chats_only(session):
    chat_id, _ = chat(session, OWNER, [("my own quokka chat", "a chat reply")], provider="demo", model="echo")
    blind_run(session)
    exported = repo.export_json(session=session, owner=OWNER)
    assert_secret(exported, "the JSON export")
    assert_no_pane_text(exported, "the JSON export")
    assert [c["id"] for c in json.loads(exported)["conversations"]] == [str(chat_id)], "the chat is still exported"
    markdown = repo.export_markdown(session=session, owner=OWNER)
    assert_secret(markdown, "the Markdown export")
    assert_no_pane_text(markdown, "the Markdown export")
    assert "my own quokka chat" in markdown


def test_a_blind_pane_cannot_be_read_or_exported_by_id_until_the_vote(session):
    ids = blind_run(session)
    pane_id = ids.panes[0].conversation_id
    for read in (repo.get_conversation, repo.export_json, repo.export_markdown):
        with pytest.raises(NotFound, match="blind comparison"):
            read(session=session, owner=OWNER, conversation_id=pane_id)
    for kind in ("compare_pane", None):
        assert repo.list_conversations(session=session, owner=OWNER, kind=kind) == []
    # Rename, pin and archive answer with the conversation (and its model): they refuse it too.
    with pytest.raises(NotFound):
        repo.rename_conversation(session=session, owner=OWNER, conversation_id=pane_id, title="peek")

    repo.vote_comparison(session=session, owner=OWNER, comparison_id=ids.comparison_id, verdict="tie")
    detail = repo.get_conversation(session=session, owner=OWNER, conversation_id=pane_id)
    assert detail.messages[-1].model == "hidden-model-x"
    assert len(repo.list_conversations(session=session, owner=OWNER, kind="compare_pane")) == 2
    # After the vote a pane is still not a chat: exporting it would turn it into one on import.
    with pytest.raises(InvalidInput, match="Compare tab"):
        repo.export_json(session=session, owner=OWNER, conversation_id=pane_id)


def test_a_follow_up_without_a_vote_hides_the_pane_again(session):
    first = blind_run(session)
    repo.vote_comparison(session=session, owner=OWNER, comparison_id=first.comparison_id, verdict="tie")
    panes = [{"provider": ref.split(":")[0], "model": ref.split(":")[1], "conversation_id": p.conversation_id}
             for ref, p in zip(MODELS, first.panes)]  # fmt: skip
    repo.begin_comparison(session=session, owner=OWNER, prompt="follow-up", panes=panes, blind=True)
    with pytest.raises(NotFound):
        repo.get_conversation(session=session, owner=OWNER, conversation_id=first.panes[0].conversation_id)


def test_stats_count_blind_panes_only_after_the_vote(session):
    chat(session, OWNER, [("hi", "hello")], provider="demo", model="echo", ttft_ms=10)
    ids = blind_run(session)
    models = {f"{s.provider}:{s.model}" for s in repo.usage_stats(session=session, owner=OWNER)}
    assert models == {"demo:echo"}, "the dashboard would pair the panes' figures with their models"
    assert {s.provider for s in repo.usage_stats(session=session, owner=None)} == {"demo"}

    repo.vote_comparison(session=session, owner=OWNER, comparison_id=ids.comparison_id, verdict="slot", winner_slot=0)
    stats = {f"{s.provider}:{s.model}": s for s in repo.usage_stats(session=session, owner=OWNER)}
    assert set(stats) == {"demo:echo", *MODELS}
    assert stats["secretprov:hidden-model-x"].ttft_p50_ms == 4321 and stats["otherprov:hidden-model-y"].error_rate == 1


def test_open_comparisons_count_at_once(session):
    blind_run(session, blind=False)
    assert {f"{s.provider}:{s.model}" for s in repo.usage_stats(session=session, owner=OWNER)} == set(MODELS)
    [run] = repo.export_comparisons(session=session, owner=OWNER)
    assert [p.message.model for p in run.panes] == ["hidden-model-x", "hidden-model-y"]


def test_comparison_export_withholds_models_until_the_vote(session):
    ids = blind_run(session)
    [run] = repo.export_comparisons(session=session, owner=OWNER)
    assert run.blind and run.vote is None
    assert_secret(run.model_dump_json(), "the comparison export")
    assert_secret(repo.get_comparison(session=session, owner=OWNER, comparison_id=ids.comparison_id).model_dump_json(),
                  "get_comparison")  # fmt: skip
    # What the blind panes showed stays: the texts, in slot order, and their timings.
    assert [p.message.content for p in run.panes] == [REPLIES[0], REPLIES[1]]
    assert [p.message.ttft_ms for p in run.panes] == [4321, 4322]
    assert all(p.cost_usd is None and p.system_prompt is None and p.message.params is None for p in run.panes)
    assert run.panes[1].message.finish_reason == "error" and run.panes[1].message.error
    assert repo.comparison_votes(session=session, owner=OWNER) == []

    repo.vote_comparison(session=session, owner=OWNER, comparison_id=ids.comparison_id, verdict="slot", winner_slot=1)
    [run] = repo.export_comparisons(session=session, owner=OWNER)
    assert [f"{p.message.provider}:{p.message.model}" for p in run.panes] == MODELS
    assert [p.cost_usd for p in run.panes] == [0.5, 0.25] and run.panes[0].system_prompt == f"system for {MODELS[0]}"
    assert run.panes[1].message.error == "otherprov says hidden-model-y is overloaded"
    assert run.panes[0].message.tool_calls[0]["arguments"] == '{"q": "secretprov hidden-model-x"}'
    [vote] = repo.comparison_votes(session=session, owner=OWNER)
    assert vote.models == MODELS


def test_search_never_finds_blind_panes(session):
    chat_id, _ = chat(session, OWNER, [("quokka facts", "quokkas smile")])
    ids = blind_run(session)
    assert {h.conversation_id for h in repo.search_messages(session=session, owner=OWNER, query="quokka")} == {chat_id}
    repo.vote_comparison(session=session, owner=OWNER, comparison_id=ids.comparison_id, verdict="tie")
    assert {h.conversation_id for h in repo.search_messages(session=session, owner=OWNER, query="quokka")} == {chat_id}


def test_export_then_import_never_turns_a_pane_into_a_chat(session):
    chat(session, OWNER, [("keep me", "kept")])
    ids = blind_run(session)
    repo.vote_comparison(session=session, owner=OWNER, comparison_id=ids.comparison_id, verdict="tie")
    created = repo.import_json(session=session, owner="bob", data=repo.export_json(session=session, owner=OWNER))
    assert len(created) == 1
    [imported] = repo.list_conversations(session=session, owner="bob")
    assert imported.title == "keep me"
    assert repo.list_conversations(session=session, owner="bob", kind="compare_pane") == []
