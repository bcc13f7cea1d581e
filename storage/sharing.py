"""Share links: an owner's read-only links to a conversation or a comparison, and what a link shows.

A link is a random token (`secrets.token_urlsafe(32)`: 256 bits) that only its owner is shown, once;
the table keeps its SHA-256, so a copy of the database holds no working link. (A fast hash is
enough: the token has far too much entropy to guess from its hash, unlike a password.) Anyone who
holds the token gets `shared_view`: a conversation's current path (or, for a link made with
`whole_tree`, every version of it), or a comparison's prompt and replies, and the files they carry,
read as the owner would read them through the same owner-filtered repository functions, so
blind secrecy (storage/blind.py) holds here too: a blind comparison without its vote names no model.
A revoked link's row is deleted, and deleting its conversation or comparison deletes it by cascade:
either way its token is simply not found.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid

import sqlalchemy as sa
from sqlmodel import Session, select

from storage import attachments as stored
from storage import blind
from storage.comparisons import get_comparison
from storage.conversations import get_conversation
from storage.errors import InvalidInput, NotFound
from storage.guard import guarded, owned_conversation, rowcount
from storage.models import (
    KIND_CHAT,
    SHARE_COMPARISON,
    SHARE_CONVERSATION,
    AttachmentData,
    Comparison,
    Conversation,
    ConversationDetail,
    Message,
    MessageAttachment,
    MessagePublic,
    NewShareLink,
    SharedMessage,
    SharedPane,
    SharedView,
    ShareLink,
    ShareLinkPublic,
    table_of,
    utcnow,
)
from storage.tree import load_tree, tree_of
from storage.validation import auto_title, check_owner, parse_id

#: Bytes of randomness in a token (token_urlsafe makes 43 characters of them).
TOKEN_BYTES = 32
#: Links one owner may have at once: a hard ceiling, far above any real use.
MAX_SHARE_LINKS = 1000
NOT_SHARED = "This link is not valid: it was revoked, or what it showed was deleted."
#: Anything that could be a token: a malformed one is refused before any query.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,128}")
_SHOWN_ROLES = ("user", "assistant")

_links = table_of(ShareLink)
_conversations = table_of(Conversation)
_comparisons = table_of(Comparison)
_messages = table_of(Message)
_file_links = table_of(MessageAttachment)


def hash_token(token: str) -> str:
    """What the table stores of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@guarded
def create_share_link(
    *,
    session: Session,
    owner: str,
    conversation_id: uuid.UUID | str | None = None,
    comparison_id: uuid.UUID | str | None = None,
    whole_tree: bool = False,
) -> NewShareLink:
    """A new link to one of this owner's chats or comparisons (exactly one of the two ids).

    A conversation's link shows its current path, or with `whole_tree` every version too. The
    token is in the result and nowhere else: it cannot be read back later. A compare pane's
    conversation is shared with its comparison, not on its own.
    """
    owner = check_owner(owner)
    if (conversation_id is None) == (comparison_id is None):
        raise InvalidInput("Share either a conversation or a comparison.")
    if not isinstance(whole_tree, bool):
        raise InvalidInput("whole_tree must be true or false.")
    if whole_tree and comparison_id is not None:
        raise InvalidInput("A comparison has no other versions: only a conversation's link can show its whole tree.")
    count = session.execute(sa.select(sa.func.count()).select_from(_links).where(_links.c.owner == owner)).scalar_one()
    if count >= MAX_SHARE_LINKS:
        raise InvalidInput(f"You have {count} share links, the most allowed; revoke some first.")
    if conversation_id is not None:
        conversation = owned_conversation(session, owner, conversation_id)
        if conversation.kind != KIND_CHAT:
            raise InvalidInput("A compare pane is shared with its comparison, from the Compare tab.")
        kind, target, title = SHARE_CONVERSATION, conversation.id, conversation.title
    else:
        cid = parse_id(comparison_id, "comparison")
        prompt = session.execute(
            sa.select(_comparisons.c.prompt).where(_comparisons.c.id == cid, _comparisons.c.owner == owner)
        ).scalar_one_or_none()
        if prompt is None:
            raise NotFound(f"No comparison with id {str(cid)!r}.")
        kind, target, title = SHARE_COMPARISON, cid, auto_title(prompt)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    row = ShareLink(owner=owner, token_hash=hash_token(token),
                    conversation_id=target if kind == SHARE_CONVERSATION else None,
                    comparison_id=target if kind == SHARE_COMPARISON else None, whole_tree=whole_tree,
                    created_at=utcnow())  # fmt: skip
    session.add(row)
    public = ShareLinkPublic(id=row.id, kind=kind, target_id=target, title=title, created_at=row.created_at,
                             whole_tree=whole_tree)
    session.commit()
    return NewShareLink(link=public, token=token)


@guarded
def list_share_links(*, session: Session, owner: str) -> list[ShareLinkPublic]:
    """This owner's links, newest first, each with what it shows (never its token)."""
    owner = check_owner(owner)
    query = (
        sa.select(_links.c.id, _links.c.conversation_id, _links.c.comparison_id, _links.c.created_at,
                  _conversations.c.title, _comparisons.c.prompt, _links.c.whole_tree)
        .select_from(_links)
        .outerjoin(_conversations, _conversations.c.id == _links.c.conversation_id)
        .outerjoin(_comparisons, _comparisons.c.id == _links.c.comparison_id)
        .where(_links.c.owner == owner)
        .order_by(_links.c.created_at.desc(), _links.c.id.desc())
        .limit(MAX_SHARE_LINKS)
    )  # fmt: skip
    found = []
    for link_id, conversation_id, comparison_id, created_at, title, prompt, whole_tree in session.execute(query).tuples():
        if conversation_id is not None:
            found.append(ShareLinkPublic(id=link_id, kind=SHARE_CONVERSATION, target_id=conversation_id,
                                         title=title, created_at=created_at, whole_tree=whole_tree))
        else:
            found.append(ShareLinkPublic(id=link_id, kind=SHARE_COMPARISON, target_id=comparison_id,
                                         title=auto_title(prompt), created_at=created_at))
    return found


@guarded
def revoke_share_link(*, session: Session, owner: str, link_id: uuid.UUID | str) -> None:
    """End one of this owner's links for good (another owner's id is NotFound, as an unknown one)."""
    owner = check_owner(owner)
    lid = parse_id(link_id, "share link")
    result = session.execute(sa.delete(_links).where(_links.c.id == lid, _links.c.owner == owner))
    if rowcount(result) == 0:
        raise NotFound(f"No share link with id {str(lid)!r}.")
    session.commit()


def _link_of(session: Session, token: object) -> ShareLink:
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise NotFound(NOT_SHARED)
    row = session.exec(select(ShareLink).where(ShareLink.token_hash == hash_token(token))).first()
    if row is None:
        raise NotFound(NOT_SHARED)
    return row


def _shared(message: MessagePublic, hidden: bool = False) -> SharedMessage:
    model = f"{message.provider}:{message.model}" if message.provider and message.model and not hidden else None
    return SharedMessage(role=message.role, content=message.content or "", model=model, error=message.error,
                         finish_reason=message.finish_reason, attachments=list(message.attachments or []))


@guarded
def shared_view(*, session: Session, token: str) -> SharedView:
    """What the link with this token shows; NotFound (NOT_SHARED) for a revoked, unknown or malformed one.

    A conversation: the user and assistant messages of its current path, with their files (no system
    prompt, settings, feedback or tool calls); a whole-tree link: every version of them, each with its
    parent, and which of them make the current path. A comparison: its prompt and files, and each pane's reply in
    the order shown, with model names only once a blind run has its vote.
    """
    link = _link_of(session, token)
    try:
        if link.conversation_id is not None:
            detail = get_conversation(session=session, owner=link.owner, conversation_id=link.conversation_id)
            if link.whole_tree:
                return _tree_view(session, link.owner, detail)
            return SharedView(kind=SHARE_CONVERSATION, title=detail.conversation.title,
                              created_at=detail.conversation.created_at,
                              messages=[_shared(m) for m in detail.messages if m.role in _SHOWN_ROLES])
        if link.comparison_id is None:  # the table's check constraint rules this out
            raise NotFound(NOT_SHARED)
        return _comparison_view(session, link.owner, link.comparison_id)
    except NotFound as e:  # what it showed is gone (or hidden): the same answer as a revoked link
        raise NotFound(NOT_SHARED) from e


def _tree_view(session: Session, owner: str, detail: ConversationDetail) -> SharedView:
    cid = detail.conversation.id
    shown: list[SharedMessage] = []
    # The shown message each message hangs from (itself when shown): a message of another role in
    # between is skipped, its children hang from the shown message above it. Parents come first.
    anchor: dict[uuid.UUID | None, int | None] = {None: None}
    for m in tree_of(session, owner, [cid])[cid]:
        parent = anchor.get(m.parent_id)
        if m.role in _SHOWN_ROLES:
            shown.append(_shared(m).model_copy(update={"parent": parent}))
            parent = len(shown) - 1
        anchor[m.id] = parent
    path = [anchor[m.id] for m in detail.messages if m.role in _SHOWN_ROLES]
    return SharedView(kind=SHARE_CONVERSATION, title=detail.conversation.title, created_at=detail.conversation.created_at,
                      messages=shown, whole_tree=True, path=[i for i in path if i is not None])


def _comparison_view(session: Session, owner: str, comparison_id: uuid.UUID) -> SharedView:
    detail = get_comparison(session=session, owner=owner, comparison_id=comparison_id)
    # The one definition of what stays secret: blind.unvoted_blind, read in SQL.
    hidden = bool(session.execute(
        sa.select(blind.unvoted_blind(_comparisons)).where(_comparisons.c.id == detail.id)).scalar_one())  # fmt: skip
    prompt = SharedMessage(role="user", content=detail.prompt)
    if detail.panes:
        first = detail.panes[0]
        prompt_id = session.execute(
            sa.select(_messages.c.id).where(_messages.c.conversation_id == first.conversation_id,
                                            _messages.c.owner == owner,
                                            _messages.c.position == first.message.position - 1)
        ).scalar_one_or_none()  # fmt: skip
        if prompt_id is not None:
            prompt.attachments = stored.refs_of(session, owner, first.conversation_id).get(prompt_id, [])
    vote = None if hidden else detail.vote
    winner = vote.winner_slot if vote is not None and vote.verdict == "slot" else None
    panes = [SharedPane(slot=p.slot, reply=_shared(p.message, hidden), winner=p.slot == winner) for p in detail.panes]
    return SharedView(kind=SHARE_COMPARISON, title=auto_title(detail.prompt), created_at=detail.created_at,
                      prompt=prompt, panes=panes, blind=detail.blind, revealed=not hidden,
                      verdict=vote.verdict if vote is not None else None)


@guarded
def shared_attachment(*, session: Session, token: str, attachment_id: uuid.UUID | str) -> AttachmentData:
    """One file that the link with this token shows, with its bytes; NotFound for any other file.

    A conversation's file is checked without reading a long chat per image: one query finds the
    messages that carry it; a path link then checks that one of them is on the current path (one
    light query of the tree's shape). A comparison's file is checked through its view, as the page
    shows it.
    """
    link = _link_of(session, token)
    aid = parse_id(attachment_id, "attachment")
    if link.conversation_id is not None:
        carriers = set(session.execute(sa.select(_messages.c.id).where(
            _file_links.c.attachment_id == aid, _file_links.c.message_id == _messages.c.id,
            _messages.c.conversation_id == link.conversation_id, _messages.c.owner == link.owner,
            _messages.c.role.in_(_SHOWN_ROLES),
        )).scalars())  # fmt: skip
        shown = bool(carriers) and (link.whole_tree or not carriers.isdisjoint(_path_ids(session, link)))
    else:
        shown = aid in shared_view(session=session, token=token).attachment_ids()
    if not shown:
        raise NotFound(f"No attachment with id {str(aid)!r}.")
    return stored.get_attachment(session=session, owner=link.owner, attachment_id=aid)


def _path_ids(session: Session, link: ShareLink) -> list[uuid.UUID]:
    """The ids of the current path of a link's conversation (none when it is gone)."""
    assert link.conversation_id is not None
    leaf = session.execute(sa.select(_conversations.c.current_leaf_id).where(
        _conversations.c.id == link.conversation_id, _conversations.c.owner == link.owner)).first()  # fmt: skip
    if leaf is None:
        return []
    return load_tree(session, link.owner, link.conversation_id, leaf[0]).path()
