"""Share links in storage (SQLite and PostgreSQL): create, list, revoke, and what a token shows.

Only a hash of each token is stored; a revoked link, a deleted target, a malformed or unknown token
all show nothing; a blind comparison's link names no model until the vote; a link serves only
the files of what it shows.
"""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from sqlalchemy import text

from storage import repository as repo
from storage.errors import InvalidInput, NotFound
from storage.models import SHARE_COMPARISON, SHARE_CONVERSATION
from tests.storage.helpers import add_turn, chat
from tests.storage.test_attachments_storage import PNG, png
from tests.storage.test_blind_secrecy import OWNER, SECRETS, assert_secret, blind_run
from tests.storage.test_tree_exchange import ORDER, PARENTS, PATH, branched


def test_a_link_shows_the_conversation_and_only_a_hash_is_stored(session, engine):
    cid, _ = chat(session, OWNER, [("first question", "first answer"), ("second question", "second answer")])
    new = repo.create_share_link(session=session, owner=OWNER, conversation_id=cid)
    assert len(new.token) >= 43  # token_urlsafe(32): 256 bits
    assert new.link.kind == SHARE_CONVERSATION and new.link.target_id == cid

    view = repo.shared_view(session=session, token=new.token)
    assert view.kind == SHARE_CONVERSATION and view.title == "first question"
    assert [(m.role, m.content) for m in view.messages] == [
        ("user", "first question"), ("assistant", "first answer"), ("user", "second question"), ("assistant", "second answer")]
    assert view.messages[1].model == "demo:echo" and view.messages[0].model is None

    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM share_link")).mappings().all()
    assert len(rows) == 1
    stored = json.dumps({k: str(v) for k, v in rows[0].items()})
    assert new.token not in stored
    assert rows[0]["token_hash"] == hashlib.sha256(new.token.encode()).hexdigest()


def test_tokens_are_unique_and_each_link_is_listed_newest_first(session):
    cid, _ = chat(session, OWNER, [("trip plan", "go north")])
    first = repo.create_share_link(session=session, owner=OWNER, conversation_id=cid)
    second = repo.create_share_link(session=session, owner=OWNER, conversation_id=cid)
    assert first.token != second.token
    listed = repo.list_share_links(session=session, owner=OWNER)
    assert [link.id for link in listed] == [second.link.id, first.link.id]
    assert {link.title for link in listed} == {"trip plan"}
    assert "token" not in listed[0].model_dump()


def test_revoked_link_shows_nothing_and_the_other_stays(session):
    cid, _ = chat(session, OWNER, [("q", "a")])
    kept = repo.create_share_link(session=session, owner=OWNER, conversation_id=cid)
    revoked = repo.create_share_link(session=session, owner=OWNER, conversation_id=cid)
    repo.revoke_share_link(session=session, owner=OWNER, link_id=revoked.link.id)
    with pytest.raises(NotFound, match="not valid"):
        repo.shared_view(session=session, token=revoked.token)
    assert repo.shared_view(session=session, token=kept.token).messages
    assert [link.id for link in repo.list_share_links(session=session, owner=OWNER)] == [kept.link.id]
    with pytest.raises(NotFound):  # twice: already gone
        repo.revoke_share_link(session=session, owner=OWNER, link_id=revoked.link.id)


@pytest.mark.parametrize("token", ["", "short", "x" * 43 + "/", "A" * 43, "é" * 43, None, 42])
def test_unknown_and_malformed_tokens_show_nothing(session, token):
    cid, _ = chat(session, OWNER, [("q", "a")])
    repo.create_share_link(session=session, owner=OWNER, conversation_id=cid)
    with pytest.raises(NotFound, match="not valid"):
        repo.shared_view(session=session, token=token)


def test_another_owner_cannot_share_list_or_revoke(session):
    cid, _ = chat(session, OWNER, [("alice's secret", "reply")])
    with pytest.raises(NotFound):
        repo.create_share_link(session=session, owner="mallory", conversation_id=cid)
    new = repo.create_share_link(session=session, owner=OWNER, conversation_id=cid)
    assert repo.list_share_links(session=session, owner="mallory") == []
    with pytest.raises(NotFound):
        repo.revoke_share_link(session=session, owner="mallory", link_id=new.link.id)
    assert repo.shared_view(session=session, token=new.token).messages  # still live
    run = blind_run(session)
    with pytest.raises(NotFound):
        repo.create_share_link(session=session, owner="mallory", comparison_id=run.comparison_id)


def test_bad_requests_are_refused_and_change_nothing(session, engine):
    cid, _ = chat(session, OWNER, [("q", "a")])
    run = blind_run(session)
    with pytest.raises(InvalidInput):
        repo.create_share_link(session=session, owner=OWNER)
    with pytest.raises(InvalidInput):
        repo.create_share_link(session=session, owner=OWNER, conversation_id=cid, comparison_id=run.comparison_id)
    with pytest.raises(NotFound):
        repo.create_share_link(session=session, owner=OWNER, conversation_id="not-an-id")
    voted = blind_run(session, blind=False)
    pane = voted.panes[0].conversation_id
    with pytest.raises(InvalidInput, match="Compare tab"):
        repo.create_share_link(session=session, owner=OWNER, conversation_id=pane)
    with pytest.raises(NotFound):  # an unvoted blind pane is not even found
        repo.create_share_link(session=session, owner=OWNER, conversation_id=run.panes[0].conversation_id)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM share_link")).scalar_one() == 0


def test_deleting_the_conversation_ends_its_links(session, engine):
    cid, _ = chat(session, OWNER, [("q", "a")])
    new = repo.create_share_link(session=session, owner=OWNER, conversation_id=cid)
    repo.delete_conversation(session=session, owner=OWNER, conversation_id=cid)
    with pytest.raises(NotFound, match="not valid"):
        repo.shared_view(session=session, token=new.token)
    assert repo.list_share_links(session=session, owner=OWNER) == []
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM share_link")).scalar_one() == 0


def test_a_blind_comparison_names_no_model_until_the_vote(session):
    run = blind_run(session)
    new = repo.create_share_link(session=session, owner=OWNER, comparison_id=run.comparison_id)
    assert new.link.kind == SHARE_COMPARISON and new.link.title == "quokka question"

    view = repo.shared_view(session=session, token=new.token)
    assert view.blind and not view.revealed and view.verdict is None
    assert [p.reply.content for p in view.panes] == ["quokka reply from the first pane", "quokka reply from the second pane"]
    assert all(p.reply.model is None and not p.winner for p in view.panes)
    assert_secret(view.model_dump_json(), "a shared blind comparison before the vote")

    repo.vote_comparison(session=session, owner=OWNER, comparison_id=run.comparison_id, verdict="slot", winner_slot=1)
    after = repo.shared_view(session=session, token=new.token)
    assert after.revealed and after.verdict == "slot"
    assert [p.reply.model for p in after.panes] == ["secretprov:hidden-model-x", "otherprov:hidden-model-y"]
    assert [p.winner for p in after.panes] == [False, True]
    assert "otherprov says" in (after.panes[1].reply.error or "")
    assert SECRETS[0] in after.model_dump_json()


def test_an_open_comparison_names_its_models(session):
    run = blind_run(session, blind=False)
    new = repo.create_share_link(session=session, owner=OWNER, comparison_id=run.comparison_id)
    view = repo.shared_view(session=session, token=new.token)
    assert view.revealed and [p.reply.model for p in view.panes] == ["secretprov:hidden-model-x", "otherprov:hidden-model-y"]


def test_a_link_serves_only_the_files_it_shows(session):
    conversation = repo.create_conversation(session=session, owner=OWNER)
    ids = repo.begin_turn(session=session, owner=OWNER, conversation_id=conversation.id, content="look",
                          provider="demo", model="echo", attachments=[png()])
    repo.finish_turn(session=session, owner=OWNER, message_id=ids.assistant_message_id, content="a chart", finish_reason="stop")
    other, _ = chat(session, OWNER, [("other", "chat")])
    elsewhere = repo.begin_turn(session=session, owner=OWNER, conversation_id=other, content="private",
                                provider="demo", model="echo", attachments=[png("private.png", PNG + b"x")])
    new = repo.create_share_link(session=session, owner=OWNER, conversation_id=conversation.id)

    view = repo.shared_view(session=session, token=new.token)
    assert [ref.name for ref in view.messages[0].attachments] == ["chart.png"]
    shown = repo.shared_attachment(session=session, token=new.token, attachment_id=ids.attachment_ids[0])
    assert shown.data == PNG and shown.mime == "image/png"
    for aid in (elsewhere.attachment_ids[0], uuid.uuid4(), "junk"):
        with pytest.raises(NotFound):
            repo.shared_attachment(session=session, token=new.token, attachment_id=aid)
    repo.revoke_share_link(session=session, owner=OWNER, link_id=new.link.id)
    with pytest.raises(NotFound):
        repo.shared_attachment(session=session, token=new.token, attachment_id=ids.attachment_ids[0])


def test_a_comparison_link_shows_the_prompt_files(session):
    ids = repo.begin_comparison(session=session, owner=OWNER, prompt="describe", blind=True, attachments=[png()],
                                panes=[{"provider": "demo", "model": "a"}, {"provider": "demo", "model": "b"}])
    new = repo.create_share_link(session=session, owner=OWNER, comparison_id=ids.comparison_id)
    view = repo.shared_view(session=session, token=new.token)
    assert view.prompt is not None and [ref.name for ref in view.prompt.attachments] == ["chart.png"]
    aid = view.prompt.attachments[0].id
    assert repo.shared_attachment(session=session, token=new.token, attachment_id=aid).data == PNG


def test_follow_up_turns_show_in_a_shared_conversation(session):
    cid, _ = chat(session, OWNER, [("q1", "a1")])
    new = repo.create_share_link(session=session, owner=OWNER, conversation_id=cid)
    add_turn(session, OWNER, cid, "q2", "a2")
    assert [m.content for m in repo.shared_view(session=session, token=new.token).messages] == ["q1", "a1", "q2", "a2"]


# -- conversations as trees: the current path, or every version ------------------------------------


def test_a_link_shows_the_current_path_and_only_its_files(session):
    ids = branched(session, OWNER)
    new = repo.create_share_link(session=session, owner=OWNER, conversation_id=ids["cid"])
    assert not new.link.whole_tree
    view = repo.shared_view(session=session, token=new.token)
    assert not view.whole_tree and [m.content for m in view.messages] == PATH
    assert "edited" not in view.model_dump_json() and "a1 first answer" not in view.model_dump_json()
    tree = repo.tree_of(session, OWNER, [ids["cid"]])[ids["cid"]]
    chart, other = (tree[ORDER.index(name)].attachments[0].id for name in ("q2", "q2b"))
    assert repo.shared_attachment(session=session, token=new.token, attachment_id=chart).data == PNG
    with pytest.raises(NotFound):  # a file of another version: not on this page, not served
        repo.shared_attachment(session=session, token=new.token, attachment_id=other)
    # The link follows the owner's current path.
    repo.switch_branch(session=session, owner=OWNER, conversation_id=ids["cid"], message_id=ids["q2b"])
    assert repo.shared_view(session=session, token=new.token).messages[2].content == "q2 edited, another chart"
    assert repo.shared_attachment(session=session, token=new.token, attachment_id=other).data == PNG + b"other"


def test_a_whole_tree_link_shows_every_version_with_its_parent(session):
    ids = branched(session, OWNER)
    new = repo.create_share_link(session=session, owner=OWNER, conversation_id=ids["cid"], whole_tree=True)
    assert new.link.whole_tree
    assert [link.whole_tree for link in repo.list_share_links(session=session, owner=OWNER)] == [True]
    view = repo.shared_view(session=session, token=new.token)
    assert view.whole_tree and len(view.messages) == len(ORDER)
    assert [m.parent for m in view.messages] == PARENTS
    assert [view.messages[i].content for i in view.path] == PATH
    tree = repo.tree_of(session, OWNER, [ids["cid"]])[ids["cid"]]
    for name in ("q2", "q2b"):
        aid = tree[ORDER.index(name)].attachments[0].id
        assert repo.shared_attachment(session=session, token=new.token, attachment_id=aid).data.startswith(PNG)
    # Another link to the same chat, made for its path, still shows the path only.
    path_link = repo.create_share_link(session=session, owner=OWNER, conversation_id=ids["cid"])
    assert [m.content for m in repo.shared_view(session=session, token=path_link.token).messages] == PATH


def test_whole_tree_is_for_conversations_only_and_must_be_a_flag(session, engine):
    cid, _ = chat(session, OWNER, [("q", "a")])
    run = blind_run(session, blind=False)
    with pytest.raises(InvalidInput, match="comparison"):
        repo.create_share_link(session=session, owner=OWNER, comparison_id=run.comparison_id, whole_tree=True)
    with pytest.raises(InvalidInput, match="whole_tree"):
        repo.create_share_link(session=session, owner=OWNER, conversation_id=cid, whole_tree="yes")
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM share_link")).scalar_one() == 0


def test_a_blind_comparison_stays_secret_whatever_the_links(session):
    run = blind_run(session)
    with pytest.raises(NotFound):  # its panes are not conversations anyone can link, whole tree or not
        repo.create_share_link(session=session, owner=OWNER, conversation_id=run.panes[0].conversation_id, whole_tree=True)
    new = repo.create_share_link(session=session, owner=OWNER, comparison_id=run.comparison_id)
    view = repo.shared_view(session=session, token=new.token)
    assert not view.whole_tree and not view.revealed
    assert_secret(view.model_dump_json(), "a shared blind comparison next to tree links")


def test_a_whole_tree_link_hangs_versions_below_a_hidden_message_from_the_shown_one_above(session):
    # A tool message (imported) is not shown; the two replies that follow it hang from the question.
    document = {"format": "parley.conversations", "version": 1, "conversations": [{"title": "tools", "current": 3, "messages": [
        {"role": "user", "content": "q"}, {"role": "tool", "content": "result", "parent": 0},
        {"role": "assistant", "content": "first", "parent": 1}, {"role": "assistant", "content": "second", "parent": 1}]}]}
    (cid,) = repo.import_json(session=session, owner=OWNER, data=json.dumps(document))
    new = repo.create_share_link(session=session, owner=OWNER, conversation_id=cid, whole_tree=True)
    view = repo.shared_view(session=session, token=new.token)
    assert [(m.content, m.parent) for m in view.messages] == [("q", None), ("first", 0), ("second", 0)]
    assert view.path == [0, 2]
