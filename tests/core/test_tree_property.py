"""Property (issue 15): random sequences of send, retry, edit, undo, switch, fork, delete-branch and API turns,
run through the core use cases (ChatTurns.send as the chat tab and `/send` call it, Conversations for the rest)
against the offline demo provider, keep the tree's invariants:

- the conversation shows one path, ending at its one current leaf, exactly as a plain model of the tree says
  (with the versions of each message on it);
- what the provider receives is the visible path (plus the new message), never a message of another branch;
- nothing is lost that was not deleted: the stored messages are exactly the model's.

Real storage: SQLite, and PostgreSQL when TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat.providers.demo import DEMO_MODEL, DemoProvider
from chat.registry import Registry, Settings
from chat.types import Message, Params, StreamEvent, ToolSpec
from core.chat import ChatTurns, Update
from core.config import AppConfig
from core.conversations import Conversations
from core.exports import ExportFiles
from core.ratelimit import Identity
from core.services import Services

MODEL = f"demo:{DEMO_MODEL}"


class Recording(DemoProvider):
    """The demo provider, noting the messages of every call."""

    def __init__(self) -> None:
        super().__init__(rate=0)
        self.calls: list[list[tuple[str, str]]] = []

    async def stream(self, model: str, messages: Sequence[Message], params: Params, *,
                     tools: Sequence[ToolSpec] = ()) -> AsyncGenerator[StreamEvent, None]:
        self.calls.append([(m.role, m.content) for m in messages])
        async for event in super().stream(model, messages, params, tools=tools):
            yield event


@dataclass
class Node:
    id: uuid.UUID
    parent: uuid.UUID | None
    role: str
    content: str
    order: int  # creation order: the newest of a subtree is its largest


@dataclass
class Tree:
    """The model of one conversation: its messages and its current leaf (None: the path is empty)."""

    cid: str
    nodes: dict[uuid.UUID, Node] = field(default_factory=dict)
    leaf: uuid.UUID | None = None

    def add(self, counter: list[int], id: uuid.UUID, parent: uuid.UUID | None, role: str, content: str) -> None:
        counter[0] += 1
        self.nodes[id] = Node(id, parent, role, content, counter[0])

    def path(self) -> list[Node]:
        return self.path_to(self.nodes[self.leaf]) if self.leaf is not None else []

    def path_to(self, node: Node) -> list[Node]:
        out: list[Node] = []
        at: uuid.UUID | None = node.id
        while at is not None:
            out.append(self.nodes[at])
            at = self.nodes[at].parent
        return out[::-1]

    def siblings(self, node: Node) -> list[Node]:
        return sorted((n for n in self.nodes.values() if n.parent == node.parent), key=lambda n: n.order)

    def subtree(self, id: uuid.UUID) -> list[Node]:
        found = [self.nodes[id]]
        for n in found:
            found += [c for c in self.nodes.values() if c.parent == n.id]
        return found

    def newest_of(self, ids: Sequence[uuid.UUID]) -> uuid.UUID:
        return max((n for i in ids for n in self.subtree(i)), key=lambda n: n.order).id

    def versions(self) -> dict[uuid.UUID, list[uuid.UUID]]:
        out = {}
        for n in self.path():
            sibs = self.siblings(n)
            if len(sibs) > 1:
                out[n.id] = [s.id for s in sibs]
        return out


ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 0)),
        st.tuples(st.just("retry"), st.integers(0, 9)),
        st.tuples(st.just("edit"), st.integers(0, 9)),
        st.tuples(st.just("undo"), st.integers(0, 0)),
        st.tuples(st.just("switch"), st.integers(0, 99)),
        st.tuples(st.just("fork"), st.integers(0, 99)),
        st.tuples(st.just("delete"), st.integers(0, 99)),
        st.tuples(st.just("api"), st.integers(0, 99)),
    ),
    min_size=1,
    max_size=12,
)


@pytest.fixture
def app_parts(engine: sa.Engine, tmp_path) -> Any:
    env = {"RATE_LIMIT": "off"}
    services = Services.build(AppConfig.from_env(env), Registry.from_settings(Settings.from_env(env)), engine)
    provider = Recording()
    services.registry.register(provider)
    yield services, provider, Conversations(services, ExportFiles(tmp_path / "exports", timers=False))
    services.close()


def stored_count(services: Services, cid: str) -> int:
    with services.engine.connect() as c:
        return int(c.execute(sa.text("SELECT count(*) FROM message WHERE conversation_id = :c"),
                             {"c": uuid.UUID(cid) if services.engine.dialect.name == "postgresql" else uuid.UUID(cid).hex}).scalar_one())


class Run:
    """One example: the use cases and the model, step by step."""

    def __init__(self, services: Services, provider: Recording, conversations: Conversations):
        self.s, self.provider, self.c = services, provider, conversations
        self.turns = ChatTurns(services)
        self.owner = f"user:prop-{uuid.uuid4().hex[:10]}"
        self.trees: list[Tree] = []
        self.open: Tree | None = None
        self.counter = [0]
        self.texts = 0

    def text(self) -> str:
        self.texts += 1
        return f"message {self.texts} of {self.owner}"

    async def send(self, text: str, *, shown: list[str], context: list[Node], expected: list[tuple[str, str]],
                   parent_id: str | None = None) -> Update:
        calls = len(self.provider.calls)
        kwargs: dict[str, Any] = {"parent_id": parent_id} if parent_id is not None else {
            "shown": shown, "context": [Message(role=n.role, content=n.content) for n in context]}  # type: ignore[arg-type]
        events = self.turns.send(owner=self.owner, identity=Identity(self.owner), text=text, model=MODEL,
                                 conversation_id=self.open.cid if self.open else None, **kwargs)
        async with aclosing(events):
            seen = [e async for e in events]
        last = seen[-1]
        assert isinstance(last, Update) and last.saved is not None, seen
        assert self.provider.calls[calls:] == [expected], "the provider is sent the visible path, and only it"
        if self.open is None:
            self.open = Tree(str(last.conversation_id))
            self.trees.append(self.open)
        assert last.conversation_id == self.open.cid
        return last

    def record(self, update: Update, user_parent: uuid.UUID | None, text: str) -> None:
        """The model's new messages: the user message (unless a retry) and its reply; the reply is the leaf."""
        tree, ids = self.open, update.saved
        assert tree is not None and ids is not None
        if ids.user_message_id is not None:
            tree.add(self.counter, ids.user_message_id, user_parent, "user", text)
            answered = ids.user_message_id
        else:
            assert ids.parent_id == user_parent, "a retry answers the message it names"
            answered = user_parent
        tree.add(self.counter, ids.assistant_message_id, answered, "assistant", update.result.text)
        tree.leaf = ids.assistant_message_id

    async def step(self, op: str, pick: int) -> None:
        tree = self.open
        path = tree.path() if tree else []
        users = [n for n in path if n.role == "user"]
        texts = [n.content for n in users]
        seen = [(n.role, n.content) for n in path]
        if op == "send":
            text = self.text()
            update = await self.send(text, shown=texts, context=path, expected=[*seen, ("user", text)])
            self.record(update, tree.leaf if tree else None, text)
        elif op in ("retry", "edit") and users:
            # As Gradio's Retry and Edit leave the chat: cut back to before the user message.
            target = users[pick % len(users)]
            before = path[: path.index(target)]
            k = texts.index(target.content)
            if op == "retry":
                update = await self.send(target.content, shown=texts[:k], context=before,
                                         expected=[*seen[: len(before) + 1]])
                assert update.saved is not None and update.saved.user_message_id is None, "a Retry stores no user message"
                self.record(update, target.id, target.content)
            else:
                text = self.text()
                update = await self.send(text, shown=texts[:k], context=before,
                                         expected=[*seen[: len(before)], ("user", text)])
                self.record(update, target.parent, text)
        elif op == "undo" and tree and users:
            left = await self.c.undo(self.owner, tree.cid, texts[:-1], texts[-1])
            assert left == len(path) - path.index(users[-1])
            tree.leaf = users[-1].parent
        elif op == "switch" and path:
            with_versions = [n for n in path if len(tree.siblings(n)) > 1] or path  # type: ignore[union-attr]
            node = with_versions[pick % len(with_versions)]
            sibs = tree.siblings(node)  # type: ignore[union-attr]
            target = sibs[(pick // len(with_versions)) % len(sibs)]
            await self.c.switch(self.owner, tree.cid, str(target.id))  # type: ignore[union-attr]
            tree.leaf = tree.newest_of([target.id])  # type: ignore[union-attr]
        elif op == "fork" and path:
            node = path[pick % len(path)]
            copied = path[: path.index(node) + 1]
            opened = await self.c.fork(self.owner, tree.cid, str(node.id))  # type: ignore[union-attr]
            assert opened.id != tree.cid  # type: ignore[union-attr]
            assert [(m.role, m.content) for m in opened.messages] == [(n.role, n.content) for n in copied]
            fork = Tree(opened.id)
            parent = None
            for m in opened.messages:
                fork.add(self.counter, m.id, parent, m.role, m.content)
                parent = m.id
            fork.leaf = parent
            self.trees.append(fork)
            self.open = fork
        elif op == "delete" and tree and tree.nodes:
            node = sorted(tree.nodes.values(), key=lambda n: n.order)[pick % len(tree.nodes)]
            gone = {n.id for n in tree.subtree(node.id)}
            others = [s.id for s in tree.siblings(node) if s.id != node.id]
            await self.c.delete_branch(self.owner, tree.cid, str(node.id))
            if tree.leaf in gone:
                tree.leaf = tree.newest_of(others) if others else node.parent
            for i in gone:
                del tree.nodes[i]
        elif op == "api":
            # `/send`: the place named by id, "" (the current leaf) or "root"; a user message means a retry.
            choices: list[Node | str] = ["", "root", *sorted(tree.nodes.values(), key=lambda n: n.order)] if tree else [""]
            chosen = choices[pick % len(choices)]
            if isinstance(chosen, Node) and chosen.role == "user":
                above = [(n.role, n.content) for n in tree.path_to(chosen)]  # type: ignore[union-attr]
                update = await self.send("", shown=[], context=[], expected=above, parent_id=str(chosen.id))
                self.record(update, chosen.id, chosen.content)
                return
            text = self.text()
            if chosen == "root":
                parent, above = None, []
            elif chosen == "":
                parent, above = (tree.leaf if tree else None), seen
            else:
                assert isinstance(chosen, Node)
                parent, above = chosen.id, [(n.role, n.content) for n in tree.path_to(chosen)]  # type: ignore[union-attr]
            update = await self.send(text, shown=[], context=[], expected=[*above, ("user", text)],
                                     parent_id=str(chosen.id) if isinstance(chosen, Node) else chosen)
            self.record(update, parent, text)

    async def check(self) -> None:
        for tree in self.trees:
            opened = await self.c.open(self.owner, tree.cid)
            path = tree.path()
            assert [m.id for m in opened.messages] == [n.id for n in path], "the path shown is the model's"
            assert [(m.role, m.content) for m in opened.messages] == [(n.role, n.content) for n in path]
            assert opened.current_leaf_id == (path[-1].id if path else None), "one current leaf: the path's end"
            assert opened.versions == tree.versions()
            assert opened.other_messages == len(tree.nodes) - len(path)
            assert await asyncio.to_thread(stored_count, self.s, tree.cid) == len(tree.nodes), "nothing lost, nothing left over"


def test_random_edits_keep_the_tree_invariants(app_parts):
    services, provider, conversations = app_parts
    # PostgreSQL's round trips are slower: fewer examples there (SQLite runs the full count).
    examples = 40 if services.engine.dialect.name == "sqlite" else 12

    @given(steps=ops)
    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    def check(steps: list[tuple[str, int]]) -> None:
        async def main() -> None:
            run = Run(services, provider, conversations)
            for op, pick in steps:
                await run.step(op, pick)
                await run.check()

        asyncio.run(main())

    check()
