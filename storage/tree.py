"""Conversations as message trees: the current path, its versions, and moving between branches.

Every message has a parent (NULL for a root; editing the first message adds a second root) and
`position` is creation order, so positions grow along every path and the newest leaf of a subtree
is its node with the largest position. `conversation.current_leaf_id` says which path is shown:
NULL means the newest message (a writer that forgets it still shows its messages), the
conversation's own id means nothing is shown (Undo of the first turn), and a leaf that no longer
exists falls back to the newest message.

Opening a conversation reads one light row (id, parent_id, position) per message, walks the tree in
Python, then reads the full rows of the path only: a long tree costs little more than its path.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import sqlalchemy as sa
from sqlmodel import Session

from storage import attachments as stored
from storage.errors import InvalidInput, NotFound
from storage.guard import conversation_public, guarded, owned_conversation
from storage.models import MESSAGE_PUBLIC_COLUMNS, Conversation, ConversationDetail, Message, MessagePublic, table_of
from storage.validation import check_owner, parse_id

#: begin_turn/begin_reply's default parent: the current leaf (None when the path is empty).
AT_LEAF: Final = "leaf"
#: set_leaf's "nothing shown" (None says the same). Stored as the conversation's own id.
EMPTY_PATH: Final = "empty"
#: Ids per IN (...) list: well under SQLite's bound-parameter limit.
CHUNK = 500

_messages = table_of(Message)
_conversations = table_of(Conversation)


@dataclass
class Tree:
    """The shape of one conversation: every message's parent and position, and its current leaf."""

    conversation_id: uuid.UUID
    parent: dict[uuid.UUID, uuid.UUID | None] = field(default_factory=dict)
    position: dict[uuid.UUID, int] = field(default_factory=dict)
    #: Children of each message (None: the roots), oldest first.
    children: dict[uuid.UUID | None, list[uuid.UUID]] = field(default_factory=dict)
    newest: uuid.UUID | None = None
    leaf: uuid.UUID | None = None

    def path(self, leaf: uuid.UUID | None = None) -> list[uuid.UUID]:
        """Root → `leaf` (default: the current leaf) by parent links."""
        node, path = self.leaf if leaf is None else leaf, []
        while node is not None:
            path.append(node)
            node = self.parent[node]
        path.reverse()
        return path

    def subtree(self, root: uuid.UUID) -> list[uuid.UUID]:
        """`root` and all its descendants."""
        found, todo = [], [root]
        while todo:
            node = todo.pop()
            found.append(node)
            todo.extend(self.children.get(node, ()))
        return found

    def newest_leaf(self, roots: Iterable[uuid.UUID]) -> uuid.UUID | None:
        """The newest message of these subtrees: the leaf Switch shows (children are always newer)."""
        nodes = [n for root in roots for n in self.subtree(root)]
        return max(nodes, key=self.position.__getitem__) if nodes else None

    def versions(self, path: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
        """Siblings (incl. itself, oldest first) of each message of `path` that has some."""
        found = {}
        for node in path:
            siblings = self.children[self.parent[node]]
            if len(siblings) > 1:
                found[node] = siblings
        return found


def load_tree(session: Session, owner: str, conversation_id: uuid.UUID, stored_leaf: uuid.UUID | None) -> Tree:
    """One light query: (id, parent_id, position) of every message, walked in Python."""
    tree = Tree(conversation_id)
    rows = session.execute(
        sa.select(_messages.c.id, _messages.c.parent_id, _messages.c.position)
        .where(_messages.c.conversation_id == conversation_id, _messages.c.owner == owner)
        .order_by(_messages.c.position)
    ).tuples()
    for mid, parent, position in rows:
        tree.parent[mid] = parent
        tree.position[mid] = position
        tree.children.setdefault(parent, []).append(mid)
        tree.newest = mid
    tree.leaf = resolve_leaf(conversation_id, stored_leaf, tree.newest, tree.parent)
    return tree


def resolve_leaf(
    conversation_id: uuid.UUID, stored_leaf: uuid.UUID | None, newest: uuid.UUID | None, known: Any
) -> uuid.UUID | None:
    """The current leaf from the stored value: see the module's docstring. `known`: `in` tells a message."""
    if stored_leaf == conversation_id:
        return None
    if stored_leaf is not None and stored_leaf in known:
        return stored_leaf
    return newest


def path_detail(session: Session, owner: str, conversation: Conversation) -> ConversationDetail:
    """The detail every reader shows: the current path with its versions (the conversation is owner-checked)."""
    tree = load_tree(session, owner, conversation.id, conversation.current_leaf_id)
    path = tree.path()
    if len(path) == len(tree.parent):  # no branches: read the conversation as a whole, no id list
        messages = messages_of(session, owner, [conversation.id])[conversation.id]
    else:
        messages = _rows_of(session, owner, conversation.id, path)
    return ConversationDetail(
        conversation=conversation_public(conversation),
        messages=messages,
        current_leaf_id=tree.leaf,
        versions=tree.versions(path),
        other_messages=len(tree.parent) - len(path),
    )


@guarded
def get_path(*, session: Session, owner: str, conversation_id: uuid.UUID | str) -> ConversationDetail:
    """One conversation with its current path, root first (NotFound for a pane of an unvoted blind comparison)."""
    owner = check_owner(owner)
    return path_detail(session, owner, owned_conversation(session, owner, conversation_id))


def messages_of(session: Session, owner: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, list[MessagePublic]]:
    """Every message of these conversations (whole trees) by position, with their files' refs (never bytes).

    One query, plus one for the files only when a message read has some (attachment_count).
    """
    found: dict[uuid.UUID, list[MessagePublic]] = {cid: [] for cid in ids}
    if not ids:
        return found
    query = _select_public().where(_messages.c.owner == owner)
    query = query.where(_messages.c.conversation_id == ids[0]) if len(ids) == 1 else query
    query = query.order_by(_messages.c.conversation_id, _messages.c.position)
    _fill(session, owner, query, found, ids[0] if len(ids) == 1 else None)
    return found


def tree_of(session: Session, owner: str, conversation_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[MessagePublic]]:
    """Every message of each conversation (the whole tree), by position, with parent_id: exports and shares.

    The caller has checked that the conversations are the owner's (and readable: see blind secrecy).
    """
    return messages_of(session, owner, conversation_ids)


def _rows_of(session: Session, owner: str, conversation_id: uuid.UUID, path: list[uuid.UUID]) -> list[MessagePublic]:
    found: dict[uuid.UUID, list[MessagePublic]] = {conversation_id: []}
    for start in range(0, len(path), CHUNK):
        query = _select_public().where(
            _messages.c.conversation_id == conversation_id,
            _messages.c.owner == owner,
            _messages.c.id.in_(path[start : start + CHUNK]),
        )
        _fill(session, owner, query.order_by(_messages.c.position), found, conversation_id)
    return found[conversation_id]


def _select_public() -> sa.Select[Any]:
    return sa.select(*[_messages.c[name] for name in MESSAGE_PUBLIC_COLUMNS], _messages.c.attachment_count)


def _fill(
    session: Session, owner: str, query: sa.Select[Any], found: dict[uuid.UUID, list[MessagePublic]],
    one: uuid.UUID | None,
) -> None:  # fmt: skip
    with_files: list[MessagePublic] = []
    # Rows straight from Core into the public model: this is the hot path of opening a long chat.
    for row in session.execute(query).tuples():
        *values, count = row
        message = MessagePublic.model_construct(**dict(zip(MESSAGE_PUBLIC_COLUMNS, values, strict=True)))
        if message.conversation_id in found:
            found[message.conversation_id].append(message)
            if count:
                with_files.append(message)
    if with_files:
        refs = stored.refs_of(session, owner, one)
        for message in with_files:
            message.attachments = refs.get(message.id, [])


def message_in(tree: Tree, message_id: object, session: Session, owner: str) -> uuid.UUID:
    """A message id of this tree; another owner's (or unknown) id is NotFound, another conversation's refused."""
    mid = parse_id(message_id, "message")
    if mid in tree.parent:
        return mid
    mine = session.execute(
        sa.select(_messages.c.id).where(_messages.c.id == mid, _messages.c.owner == owner)
    ).first()  # fmt: skip
    if mine is None:
        raise NotFound(f"No message with id {str(mid)!r}.")
    raise InvalidInput(f"Message {str(mid)!r} is not in this conversation.")
