"""The chat's versions map and its handlers (ui/branches.py): rows as Gradio draws them, refused turns shown
but never stored do not shift the map, a chat that is not the stored path maps only what agrees; switch, fork
and delete through the handler redraw the chat and its map, and a stale or malformed request changes nothing.
Real storage (SQLite) and the offline demo provider; the handler is called as Gradio calls it."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest
import sqlalchemy as sa
from sqlmodel import Session

from chat.registry import Registry, Settings
from core.config import AppConfig
from core.services import Services
from core.store import start_turn
from storage import repository as repo
from storage.db import init_db, make_engine
from ui.branches import EMPTY_MAP, BranchHandlers, branch_map, parse_action
from ui.chat import refused
from ui.convert import stored_to_chatbot
from ui.sidebar import SidebarHandlers

ALICE = "user:alice"


@dataclass
class FakeRequest:
    username: str = "alice"
    session_hash: str = "s1"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def msg(role: str, content: str) -> SimpleNamespace:
    return SimpleNamespace(id=uuid.uuid4(), role=role, content=content)


def as_browser(value: list[Any]) -> list[dict[str, Any]]:
    """A chat value as the browser sends it back: content as a list of text parts."""
    out = []
    for m in value:
        d = m if isinstance(m, dict) else {"role": m.role, "content": m.content, "metadata": dict(m.metadata or {})}
        content = d["content"]
        out.append({**d, "content": [{"type": "text", "text": content}] if isinstance(content, str) else content})
    return out


def items(raw: str) -> list[tuple[int, str, int, int, bool]]:
    """(row, role, shown version, versions, has Branch) for each item of a map."""
    return [(i["row"], i["role"], i["at"] + 1, len(i["ids"]), bool(i["fork"])) for i in json.loads(raw)["items"]]


# -- the map, from a chat value and a stored path -----------------------------------------------------


def test_rows_group_a_reply_s_bubbles_and_refused_turns_do_not_shift_the_map():
    u1, a1, u2, a2 = msg("user", "one"), msg("assistant", "re one"), msg("user", "two"), msg("assistant", "re two")
    retried = msg("assistant", "re two, again")
    edited = msg("user", "one, edited")
    path = [u1, a1, u2, a2]
    versions = {u1.id: [u1.id, edited.id], a2.id: [retried.id, a2.id]}
    shown = stored_to_chatbot([
        SimpleNamespace(role="user", content="one", attachments=()),
        SimpleNamespace(role="assistant", content="re one", reasoning="thinking", finish_reason="stop", provider=None, model=None,
                        error=None, ttft_ms=10, duration_ms=20, output_tokens=3, input_tokens=1, usage_estimated=False,
                        cached_input_tokens=None, tool_calls=()),
    ])
    # A message refused before it was sent (never stored) sits between the stored turns, as the chat shows it.
    refused_turn = [{"role": "user", "content": "too long"}, *as_browser(refused("Too long."))]
    chat = as_browser([*shown, *refused_turn, {"role": "user", "content": "two"}, {"role": "assistant", "content": "re two"}])
    assert len([m for m in chat if m["role"] == "assistant"]) > 3  # reasoning, text and metrics: one row

    raw = branch_map(chat, path, versions, "conv-1")
    # Rows: one, its reply, the refused message, its notice, two, its reply.
    assert json.loads(raw)["rows"] == 6
    assert items(raw) == [(0, "user", 1, 2, False), (1, "bot", 1, 0, True), (5, "bot", 2, 2, True)]
    ids = {i["row"]: i for i in json.loads(raw)["items"]}
    assert ids[5]["ids"] == [str(retried.id), str(a2.id)] and ids[5]["fork"] == str(a2.id)
    assert ids[1]["fork"] == str(a1.id)


def test_a_chat_that_parts_from_the_stored_path_is_mapped_only_where_it_agrees():
    u1, a1, u2, a2 = msg("user", "one"), msg("assistant", "re one"), msg("user", "two"), msg("assistant", "re two")
    other = msg("assistant", "re two b")
    versions = {a2.id: [a2.id, other.id]}
    chat = [{"role": "user", "content": "one"}, {"role": "assistant", "content": "re one"},
            {"role": "user", "content": "something else"}, {"role": "assistant", "content": "…"}]
    assert items(branch_map(chat, [u1, a1, u2, a2], versions, "c")) == [(1, "bot", 1, 0, True)]
    # Whitespace aside, texts agree; a turn still streaming (no stored reply yet) gets no Branch.
    streaming = [{"role": "user", "content": " one "}, {"role": "assistant", "content": "re one"},
                 {"role": "user", "content": "two\n"}, {"role": "assistant", "content": "re tw"}]
    assert items(branch_map(streaming, [u1, a1, u2], {}, "c")) == [(1, "bot", 1, 0, True)]
    assert branch_map(chat, [u1, a1], {}, None) == EMPTY_MAP
    assert items(branch_map([], [u1, a1], versions, "c")) == []


def test_actions_from_the_page_are_checked_before_anything_runs():
    good = json.dumps({"op": "switch", "id": "m", "conversation": "c", "at": 1})
    assert parse_action(good) is not None and parse_action(good).op == "switch"  # type: ignore[union-attr]
    for bad in [None, 3, "", "not json", "[]", json.dumps({"op": "drop", "id": "m", "conversation": "c"}),
                json.dumps({"op": "fork", "id": 5, "conversation": "c"}), json.dumps({"op": "fork", "id": "m"}),
                json.dumps({"op": "fork", "id": "m" * 500, "conversation": "c"})]:
        assert parse_action(bad) is None, bad


# -- the handlers, on real storage ----------------------------------------------------------------------


@pytest.fixture
def side(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'parley.db'}")
    init_db(engine)
    env: dict[str, str] = {}  # the offline demo provider only
    services = Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env)), engine)
    yield SidebarHandlers(services)
    services.close()
    engine.dispose()


def turn(engine: sa.Engine, conversation_id: str | None, shown: list[str], prompt: str, reply: str) -> str:
    """A turn as the chat stores it: shown = the chat's user texts (a retry repeats the last one)."""
    with Session(engine) as session:
        ids = start_turn(session=session, owner=ALICE, conversation_id=conversation_id, history_user_texts=shown,
                         content=prompt, provider="demo", model="parley-demo", system_prompt="", params={}, attachments=[])
        repo.finish_turn(session=session, owner=ALICE, message_id=ids.assistant_message_id, content=reply, finish_reason="stop")
        return str(ids.conversation_id)


def test_switch_fork_and_delete_redraw_the_chat_and_its_map(side: SidebarHandlers):
    engine = side.s.engine
    branches = BranchHandlers(side.s, side)
    req = FakeRequest()
    conv = turn(engine, None, [], "one", "re one")
    turn(engine, conv, ["one"], "two", "re two")
    turn(engine, conv, ["one"], "two", "re two, again")  # Retry: a second reply to "two"
    opened = run(side.conversations.open(ALICE, conv))
    chat = as_browser(run(side.chat_value(ALICE, opened)))
    # The page's chat holds a refused message after the first turn: the map still lands on the right rows.
    chat = chat[:2] + as_browser([{"role": "user", "content": "nope"}, *refused("Refused.")]) + chat[2:]
    raw = run(branches.refresh(chat, conv, None, req))
    assert items(raw)[-1] == (5, "bot", 2, 2, True)
    first_reply = json.loads(raw)["items"][-1]["ids"][0]

    def act(op: str, message_id: str, conversation: str = conv, open_id: str | None = conv) -> tuple[Any, Any, Any]:
        return run(branches.act(json.dumps({"op": op, "id": message_id, "conversation": conversation}), open_id, None, req))

    value, cid, new_map = act("switch", first_reply)
    assert cid == conv and [m["content"] for m in value if m["role"] == "user"] == ["one", "two"]
    assert "re two" in [m["content"] for m in value] and "re two, again" not in [m["content"] for m in value]
    assert items(new_map)[-1] == (3, "bot", 1, 2, True)
    assert run(side.conversations.open(ALICE, conv)).messages[-1].content == "re two"  # the store moved too

    # A request made for a chat no longer open (another tab, a new chat since) does nothing.
    with pytest.warns(UserWarning):
        assert act("switch", first_reply, conversation="other") == (gr.skip(), gr.skip(), gr.skip())
    assert run(branches.act("garbage", conv, None, req)) == (gr.skip(), gr.skip(), gr.skip())
    with pytest.warns(UserWarning):
        assert act("switch", str(uuid.uuid4())) == (gr.skip(), gr.skip(), gr.skip())  # core says why

    value, forked, fork_map = act("fork", first_reply)
    assert forked != conv and [m["content"] for m in value if m["role"] == "user"] == ["one", "two"]
    assert json.loads(fork_map)["conversation"] == forked and all(i["ids"] == [] for i in json.loads(fork_map)["items"])

    value, cid, after = act("delete", first_reply)
    assert cid == conv and "re two, again" in [m["content"] for m in value]
    assert items(after)[-1] == (3, "bot", 1, 0, True)  # one version left: no navigator, Branch stays
    assert run(branches.refresh(chat, None, None, req)) == EMPTY_MAP
