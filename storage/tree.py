"""Conversations as message trees: the current path, its versions, and moving between branches.

Every message has a parent (NULL for a root; editing the first message adds a second root) and
`position` is creation order, so positions grow along every path and the newest leaf of a subtree
is its node with the largest position. `conversation.current_leaf_id` says which path is shown:
NULL means the newest message (a writer that forgets it still shows its messages), the
conversation's own id means nothing is shown (Undo of the first turn), and a leaf that no longer
exists falls back to the newest message.

Opening a conversation reads its messages in one query and walks their parent links in Python (most chats
have no branches, and a light query first cost them more than the rows of other versions cost a branched
one); moving between branches, Undo, fork and delete walk one light row (id, parent_id, position) per
message, then read the full rows of the path only.
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
from storage.models import (
    INTERRUPTED,
    KIND_CHAT,
    MESSAGE_PUBLIC_COLUMNS,
    PENDING,
    TITLE_MAX,
    Conversation,
    ConversationDetail,
    ConversationPublic,
    Message,
    MessageAttachment,
    MessagePublic,
    table_of,
    utcnow,
)
from storage.validation import check_owner, clean_title, parse_id

#: begin_turn/begin_reply's default parent: the current leaf (None when the path is empty).
AT_LEAF: Final = "leaf"
#: set_leaf's "nothing shown" (None says the same). Stored as the conversation's own id.
EMPTY_PATH: Final = "empty"
#: Ids per IN (...) list: well under SQLite's bound-parameter limit.
CHUNK = 500

_messages = table_of(Message)
_conversations = table_of(Conversation)
# Built once, as storage/turns.py's per-turn statements: every turn of a chat reads its tree and its user messages.
_TREE = (
    sa.select(_messages.c.id, _messages.c.parent_id, _messages.c.position)
    .where(_messages.c.conversation_id == sa.bindparam("c_id"), _messages.c.owner == sa.bindparam("c_owner"))
    .order_by(_messages.c.position)
)  # fmt: skip


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
    rows = session.execute(_TREE, {"c_id": conversation_id, "c_owner": owner}).tuples()
    return _walk(conversation_id, stored_leaf, rows)


def _walk(conversation_id: uuid.UUID, stored_leaf: uuid.UUID | None,
          rows: Iterable[tuple[uuid.UUID, uuid.UUID | None, int]]) -> Tree:  # fmt: skip
    """The tree of (id, parent_id, position) rows given by position."""
    tree = Tree(conversation_id)
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


def path_detail(session: Session, owner: str, conversation: Conversation, tree: Tree | None = None) -> ConversationDetail:
    """The detail every reader shows: the current path with its versions (the conversation is owner-checked).

    Without a `tree`, one query reads every message and the walk uses their own parent links: most chats have
    no branches, and for them the light query before the rows cost more than half again (bench/README.md)."""
    if tree is None:
        messages = messages_of(session, owner, [conversation.id])[conversation.id]
        tree = _walk(conversation.id, conversation.current_leaf_id, ((m.id, m.parent_id, m.position) for m in messages))
        path = tree.path()
        if len(path) != len(messages):  # branches: the other versions' rows are dropped
            shown = set(path)
            messages = [m for m in messages if m.id in shown]
    else:
        path = tree.path()
        messages = _rows_of(session, owner, conversation.id, None if len(path) == len(tree.parent) else path)
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


@guarded
def get_path_user_messages(*, session: Session, owner: str, conversation_id: uuid.UUID | str) -> list[MessagePublic]:
    """The user messages of the current path, root first: all a new turn checks the chat against (core/store.py).

    get_path's rows without the replies: a turn in a 1,000-message chat built all 700 messages of its path
    (python -m bench.turns)."""
    owner = check_owner(owner)
    conversation = owned_conversation(session, owner, conversation_id)
    tree = load_tree(session, owner, conversation.id, conversation.current_leaf_id)
    path = tree.path()
    return _rows_of(session, owner, conversation.id, None if len(path) == len(tree.parent) else path, role="user")


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


def _rows_of(session: Session, owner: str, conversation_id: uuid.UUID, path: list[uuid.UUID] | None,
             role: str | None = None) -> list[MessagePublic]:  # fmt: skip
    """The rows of `path` (None: every message of the conversation), of one `role` if given, by position."""
    found: dict[uuid.UUID, list[MessagePublic]] = {conversation_id: []}
    if path is None and role == "user":  # a turn of a chat without branches (get_path_user_messages)
        _fill(session, owner, _USER_ROWS, found, conversation_id, {"c_id": conversation_id, "c_owner": owner})
        return found[conversation_id]
    chunks = [None] if path is None else [path[start : start + CHUNK] for start in range(0, len(path), CHUNK)]
    for chunk in chunks:
        query = _select_public().where(_messages.c.conversation_id == conversation_id, _messages.c.owner == owner)
        query = query if chunk is None else query.where(_messages.c.id.in_(chunk))
        query = query if role is None else query.where(_messages.c.role == role)
        _fill(session, owner, query.order_by(_messages.c.position), found, conversation_id)
    return found[conversation_id]


def _select_public() -> sa.Select[Any]:
    return sa.select(*[_messages.c[name] for name in MESSAGE_PUBLIC_COLUMNS], _messages.c.attachment_count)


_USER_ROWS = (
    _select_public()
    .where(_messages.c.conversation_id == sa.bindparam("c_id"), _messages.c.owner == sa.bindparam("c_owner"),
           _messages.c.role == "user")
    .order_by(_messages.c.position)
)  # fmt: skip


def _fill(
    session: Session, owner: str, query: sa.Select[Any], found: dict[uuid.UUID, list[MessagePublic]],
    one: uuid.UUID | None, params: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    with_files: list[MessagePublic] = []
    # Rows straight from Core into the public model: this is the hot path of opening a long chat.
    # `attachments` is given: left out, model_construct calls its default factory through
    # inspect.signature(list), which took over 1 ms per message.
    for row in session.execute(query, params).tuples():
        *values, count = row
        message = MessagePublic.model_construct(attachments=[], **dict(zip(MESSAGE_PUBLIC_COLUMNS, values, strict=True)))
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


# --- moving and cutting branches ------------------------------------------------------------------


@guarded
def switch_branch(
    *, session: Session, owner: str, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str
) -> ConversationDetail:
    """Show `message_id`'s branch: the current leaf becomes the newest message of its subtree."""
    owner = check_owner(owner)
    conversation = owned_conversation(session, owner, conversation_id)
    tree = load_tree(session, owner, conversation.id, conversation.current_leaf_id)
    tree.leaf = tree.newest_leaf([message_in(tree, message_id, session, owner)])
    return _moved(session, owner, conversation, tree)


@guarded
def set_leaf(
    *, session: Session, owner: str, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str | None
) -> ConversationDetail:
    """Undo: the path ends exactly at `message_id` (None or EMPTY_PATH: nothing shown). Nothing is deleted."""
    owner = check_owner(owner)
    conversation = owned_conversation(session, owner, conversation_id)
    tree = load_tree(session, owner, conversation.id, conversation.current_leaf_id)
    tree.leaf = None if message_id is None or message_id == EMPTY_PATH else message_in(tree, message_id, session, owner)
    return _moved(session, owner, conversation, tree)


def _moved(session: Session, owner: str, conversation: Conversation, tree: Tree) -> ConversationDetail:
    conversation.current_leaf_id = conversation.id if tree.leaf is None else tree.leaf
    session.flush()
    detail = path_detail(session, owner, conversation, tree)
    session.commit()
    return detail


@guarded
def delete_branch(*, session: Session, owner: str, message_id: uuid.UUID | str) -> int:
    """Delete a message, all its descendants and the files only they linked; returns how many messages went.

    A current leaf inside the branch moves to the newest leaf of the remaining siblings' subtrees, else
    to the parent (an empty path when the branch was the last root).
    """
    owner = check_owner(owner)
    conversation = owned_conversation(session, owner, _owned_message_conversation(session, owner, message_id))
    tree = load_tree(session, owner, conversation.id, conversation.current_leaf_id)
    mid = message_in(tree, message_id, session, owner)
    doomed = sorted(tree.subtree(mid), key=tree.position.__getitem__, reverse=True)
    links = table_of(MessageAttachment)
    linked: set[uuid.UUID] = set()
    for start in range(0, len(doomed), CHUNK):
        chunk = doomed[start : start + CHUNK]
        linked.update(session.execute(sa.select(links.c.attachment_id).where(links.c.message_id.in_(chunk))).scalars())
    if tree.leaf in set(doomed):
        siblings = [n for n in tree.children[tree.parent[mid]] if n != mid]
        tree.leaf = tree.newest_leaf(siblings) or tree.parent[mid]
        conversation.current_leaf_id = conversation.id if tree.leaf is None else tree.leaf
    conversation.updated_at = utcnow()
    session.flush()
    # Newest first, so a chunk never leaves a child whose parent is gone (see migration 0008): one
    # statement for a branch of up to CHUNK messages.
    for start in range(0, len(doomed), CHUNK):
        session.execute(sa.delete(_messages).where(_messages.c.owner == owner, _messages.c.id.in_(doomed[start : start + CHUNK])))
    stored.drop_unlinked(session, owner, linked)
    session.commit()
    return len(doomed)


def _owned_message_conversation(session: Session, owner: str, message_id: object) -> uuid.UUID:
    mid = parse_id(message_id, "message")
    cid: uuid.UUID | None = session.execute(
        sa.select(_messages.c.conversation_id).where(_messages.c.id == mid, _messages.c.owner == owner)
    ).scalar_one_or_none()  # fmt: skip
    if cid is None:
        raise NotFound(f"No message with id {str(mid)!r}.")
    return cid


@guarded
def fork_conversation(
    *, session: Session, owner: str, message_id: uuid.UUID | str, title: str | None = None
) -> ConversationPublic:
    """A new chat holding a copy of the path root → `message_id`, with the source's model and settings.

    Each copy keeps its content, reasoning, metrics, usage, feedback, tool calls and files (links to
    the same stored files); a reply still streaming is copied as interrupted. The title is `title`,
    else the source's with " (branch)". A pane of an unvoted blind comparison is NotFound.
    """
    owner = check_owner(owner)
    title = clean_title(title) if title is not None else None
    source = owned_conversation(session, owner, _owned_message_conversation(session, owner, message_id))
    tree = load_tree(session, owner, source.id, source.current_leaf_id)
    path = tree.path(message_in(tree, message_id, session, owner))
    rows: dict[uuid.UUID, dict[str, Any]] = {}
    links = table_of(MessageAttachment)
    link_rows: list[dict[str, Any]] = []
    for start in range(0, len(path), CHUNK):
        chunk = path[start : start + CHUNK]
        rows.update((r["id"], dict(r)) for r in session.execute(sa.select(_messages).where(_messages.c.id.in_(chunk))).mappings())
        link_rows.extend(dict(r) for r in session.execute(sa.select(links).where(links.c.message_id.in_(chunk))).mappings())
    now, cid = utcnow(), uuid.uuid4()
    copies: dict[uuid.UUID, uuid.UUID] = {}
    messages = []
    for position, old in enumerate(path):
        row = rows[old]
        copies[old] = uuid.uuid4()
        row.update(id=copies[old], conversation_id=cid, position=position, parent_id=copies.get(row["parent_id"]),
                   instance_id=None)  # fmt: skip
        if row["finish_reason"] == PENDING:  # its stream goes on in the source only
            row["finish_reason"] = INTERRUPTED
        messages.append(row)
    session.execute(sa.insert(_conversations).values(
        id=cid, owner=owner, kind=KIND_CHAT, title=title or _branch_title(source.title), model=source.model,
        system_prompt=source.system_prompt, params=source.params, pinned=False, archived=False,
        created_at=now, updated_at=now, current_leaf_id=copies[path[-1]],
    ))  # fmt: skip
    session.execute(sa.insert(_messages), messages)
    if link_rows:
        session.execute(sa.insert(links), [{**r, "message_id": copies[r["message_id"]]} for r in link_rows])
    session.commit()
    return conversation_public(owned_conversation(session, owner, cid))


def _branch_title(title: str) -> str:
    suffix = " (branch)"
    if len(title) + len(suffix) > TITLE_MAX:
        title = title[: TITLE_MAX - len(suffix) - 1].rstrip() + "…"
    return title + suffix
