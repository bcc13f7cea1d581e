"""Attachments: files of user messages, stored once per owner and linked from each message that carries them.

The bytes live in the database (`attachment.data`: SQLite BLOB, PostgreSQL bytea), keyed by
(owner, sha256): the same file sent twice, or under two names, is one row and two links, each link
with the name it was given in its message. Nothing here reads a file's bytes on the chat's hot path:
`refs_of` (opening a chat) reads names and sizes only, and only for messages whose
`attachment_count` says they have files. Deleting a conversation or truncating one (Retry, Undo,
Edit) ends with `drop_unlinked`, which removes this owner's attachments that no message links any more.

storage cannot import chat, so the file arrives as an `AttachmentIn` (or anything with the same
attributes, such as chat.types.Attachment) and is checked again here: its hash and size are
recomputed from its bytes, since the hash is what deduplication trusts.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from storage.errors import InvalidInput, NotFound
from storage.guard import guarded, owned_conversation, rowcount
from storage.models import (
    ATTACHMENT_NAME_MAX,
    MAX_ATTACHMENT_BYTES,
    MAX_CONTENT_CHARS,
    MAX_MESSAGE_ATTACHMENTS,
    MIME_MAX,
    Attachment,
    AttachmentData,
    AttachmentRef,
    Message,
    MessageAttachment,
    table_of,
    utcnow,
)
from storage.validation import check_owner, clean_text, no_surrogates, parse_id

_MIME = re.compile(r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+(?:\s*;\s*[\w.+-]+=[\w.+-]+)*$")
# Control characters (C0, DEL, C1) and path separators never belong in a file's display name.
_NAME_JUNK = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_METRIC_MAX = 2**31 - 1
#: Ids per IN (...) list: well under SQLite's and PostgreSQL's bound-parameter limits.
CHUNK = 500

_attachments = table_of(Attachment)
_links = table_of(MessageAttachment)
_messages = table_of(Message)
_REF_COLUMNS = (
    _attachments.c.id, _attachments.c.mime, _attachments.c.size, _attachments.c.sha256,
    _attachments.c.width, _attachments.c.height, _attachments.c.pages,
)  # fmt: skip


class AttachmentIn(BaseModel):
    """A file to store, already checked by its caller (core passes chat.attachments.ingest's result).

    `sha256` and `size` may be left out: they are computed from `data` (and, when given, must agree).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    mime: str
    data: bytes = Field(repr=False)
    sha256: str = ""
    size: int = 0
    width: int | None = None
    height: int | None = None
    pages: int | None = None
    text: str | None = Field(default=None, repr=False)


class AttachmentLike(Protocol):
    """What begin_turn and import checkers may hand over: AttachmentIn, or chat.types.Attachment."""

    @property
    def name(self) -> str: ...
    @property
    def mime(self) -> str: ...
    @property
    def data(self) -> bytes: ...
    @property
    def sha256(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def width(self) -> int | None: ...
    @property
    def height(self) -> int | None: ...
    @property
    def pages(self) -> int | None: ...
    @property
    def text(self) -> str | None: ...


def clean_name(value: object) -> str:
    """A file's display name: its last path part, without control characters, 1 to 200 characters."""
    if not isinstance(value, str):
        raise InvalidInput("A file name must be text.")
    name = _NAME_JUNK.sub("", no_surrogates(value)).replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or name in (".", ".."):
        raise InvalidInput("A file needs a name.")
    return name[:ATTACHMENT_NAME_MAX]


def check_attachments(items: object) -> list[AttachmentIn]:
    """The files as they will be stored, each checked, or InvalidInput naming the file and the problem."""
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise InvalidInput("The attachments must be a list of files.")
    if len(items) > MAX_MESSAGE_ATTACHMENTS:
        raise InvalidInput(f"A message can carry at most {MAX_MESSAGE_ATTACHMENTS} files; this one has {len(items)}.")
    return [check_attachment(item) for item in items]


def check_attachment(item: object) -> AttachmentIn:
    """One file as it will be stored: name cleaned, hash and size computed from the bytes."""
    if isinstance(item, Mapping):
        fields = {name: item.get(name) for name in AttachmentIn.model_fields}
    else:
        fields = {name: getattr(item, name, None) for name in AttachmentIn.model_fields}
    name = clean_name(fields["name"])
    data = fields["data"]
    if not isinstance(data, bytes) or not data:
        raise InvalidInput(f"{name}: the file is empty.")
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise InvalidInput(f"{name} is {len(data) / 1e6:.1f} MB; a stored file is limited to {MAX_ATTACHMENT_BYTES / 1e6:.0f} MB.")
    mime = fields["mime"]
    if not isinstance(mime, str) or len(mime) > MIME_MAX or not _MIME.match(mime):
        raise InvalidInput(f"{name}: {str(mime)[:40]!r} is not a media type.")
    digest = hashlib.sha256(data).hexdigest()
    given_hash, given_size = fields["sha256"], fields["size"]
    if given_hash and given_hash != digest:
        raise InvalidInput(f"{name}: its sha256 does not match its bytes.")
    if given_size and given_size != len(data):
        raise InvalidInput(f"{name}: its size ({given_size}) does not match its bytes ({len(data)}).")
    dims = {key: _dimension(fields[key], name, key) for key in ("width", "height", "pages")}
    text = clean_text(fields["text"], f"text of {name}", limit=MAX_CONTENT_CHARS, optional=True)
    return AttachmentIn(name=name, mime=mime.lower(), data=data, sha256=digest, size=len(data), text=text, **dims)


def _dimension(value: object, name: str, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _METRIC_MAX:
        raise InvalidInput(f"{name}: the {what} must be a whole number from 1.")
    return value


# --- writes (inside the caller's transaction) ----------------------------------------------------


def store(session: Session, owner: str, files: Sequence[AttachmentIn]) -> list[uuid.UUID]:
    """The attachment id of each file, inserting the ones this owner does not have yet (dedup by sha256).

    Existing rows are read FOR UPDATE (PostgreSQL; SQLite serialises writers anyway), so a
    concurrent clean-up cannot delete one between this read and the caller's link to it.
    """
    wanted = {f.sha256: f for f in files}
    ids = _ids_by_hash(session, owner, list(wanted), lock=True)
    missing = [f for sha, f in wanted.items() if sha not in ids]
    if missing:
        now = utcnow()
        rows = [
            dict(id=uuid.uuid4(), owner=owner, sha256=f.sha256, mime=f.mime, size=f.size, width=f.width,
                 height=f.height, pages=f.pages, text=f.text, data=f.data, created_at=now)
            for f in missing
        ]  # fmt: skip
        # Another request of the same owner may be storing the same file right now: keep its row.
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        session.execute(insert(_attachments).on_conflict_do_nothing(index_elements=["owner", "sha256"]), rows)
        ids.update(_ids_by_hash(session, owner, [f.sha256 for f in missing], lock=True))
    return [ids[f.sha256] for f in files]


def _ids_by_hash(session: Session, owner: str, hashes: list[str], *, lock: bool) -> dict[str, uuid.UUID]:
    found: dict[str, uuid.UUID] = {}
    for chunk in _chunks(hashes):
        query = sa.select(_attachments.c.sha256, _attachments.c.id).where(
            _attachments.c.owner == owner, _attachments.c.sha256.in_(chunk)
        )
        found.update({sha: aid for sha, aid in session.execute(query.with_for_update() if lock else query).tuples()})
    return found


def link(session: Session, message_id: uuid.UUID, files: Sequence[AttachmentIn], ids: Sequence[uuid.UUID]) -> None:
    """Link the files, in order and under their names, to a message (whose attachment_count says len(files))."""
    session.execute(
        sa.insert(_links),
        [dict(message_id=message_id, position=i, attachment_id=aid, name=f.name) for i, (f, aid) in enumerate(zip(files, ids, strict=True))],
    )


def linked_from(session: Session, owner: str, conversation_id: uuid.UUID, position: int | None = None) -> list[uuid.UUID]:
    """The attachments linked from this conversation's messages (those at `position` and after it)."""
    query = (
        sa.select(_links.c.attachment_id)
        .distinct()
        .join(_messages, _messages.c.id == _links.c.message_id)
        .where(_messages.c.conversation_id == conversation_id, _messages.c.owner == owner, _messages.c.attachment_count > 0)
    )
    if position is not None:
        query = query.where(_messages.c.position >= position)
    return list(session.execute(query).scalars())


def drop_unlinked(session: Session, owner: str, candidates: Iterable[uuid.UUID]) -> int:
    """Delete those of `candidates` that are this owner's and that no message links any more."""
    ids = list(candidates)
    dropped = 0
    for chunk in _chunks(ids):
        query = sa.delete(_attachments).where(
            _attachments.c.owner == owner,
            _attachments.c.id.in_(chunk),
            ~sa.exists().where(_links.c.attachment_id == _attachments.c.id),
        )
        if session.get_bind().dialect.name != "postgresql":
            dropped += rowcount(session.execute(query))
            continue
        # On PostgreSQL a request of the same owner may have linked one of them since this
        # statement's snapshot: the foreign key then refuses the delete, and keeping it is right.
        try:
            with session.begin_nested():
                dropped += rowcount(session.execute(query))
        except IntegrityError:
            pass
    return dropped


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


# --- reads ---------------------------------------------------------------------------------------


def refs_of(session: Session, owner: str, conversation_id: uuid.UUID | None) -> dict[uuid.UUID, list[AttachmentRef]]:
    """Each message's files (no bytes), for one conversation or (None) all of this owner's, in order."""
    query = (
        sa.select(_links.c.message_id, _links.c.name, *_REF_COLUMNS)
        .join(_messages, _messages.c.id == _links.c.message_id)
        .join(_attachments, _attachments.c.id == _links.c.attachment_id)
        .where(_messages.c.owner == owner, _messages.c.attachment_count > 0, _attachments.c.owner == owner)
        .order_by(_links.c.message_id, _links.c.position)
    )
    if conversation_id is not None:
        query = query.where(_messages.c.conversation_id == conversation_id)
    found: dict[uuid.UUID, list[AttachmentRef]] = {}
    for row in session.execute(query).mappings():
        values = dict(row)
        found.setdefault(values.pop("message_id"), []).append(AttachmentRef.model_construct(**values))
    return found


def data_of(session: Session, owner: str, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, bytes]:
    """The bytes of these attachments of this owner (the JSON export's)."""
    found: dict[uuid.UUID, bytes] = {}
    for chunk in _chunks(list(set(ids))):
        query = sa.select(_attachments.c.id, _attachments.c.data).where(
            _attachments.c.owner == owner, _attachments.c.id.in_(chunk)
        )
        found.update({aid: bytes(data) for aid, data in session.execute(query).tuples()})
    return found


@guarded
def get_attachment(*, session: Session, owner: str, attachment_id: uuid.UUID | str) -> AttachmentData:
    """One of this owner's stored files with its bytes, named as in the first message that carries it.

    Another owner's id, a malformed id and an unknown one all raise the same NotFound.
    """
    owner = check_owner(owner)
    aid = parse_id(attachment_id, "attachment")
    first_name = (
        sa.select(_links.c.name)
        .join(_messages, _messages.c.id == _links.c.message_id)
        .where(_links.c.attachment_id == _attachments.c.id)
        .order_by(_messages.c.created_at, _links.c.position)
        .limit(1)
        .scalar_subquery()
    )
    row = session.execute(
        sa.select(*_REF_COLUMNS, _attachments.c.text, _attachments.c.data, first_name.label("name")).where(
            _attachments.c.id == aid, _attachments.c.owner == owner
        )
    ).mappings().first()
    if row is None or row["name"] is None:
        raise NotFound(f"No attachment with id {str(aid)!r}.")
    return AttachmentData.model_validate({**row, "data": bytes(row["data"])})


@guarded
def conversation_attachments(
    *, session: Session, owner: str, conversation_id: uuid.UUID | str
) -> dict[int, list[AttachmentData]]:
    """The files of a conversation's messages with their bytes, keyed by the message's position.

    For the context of a later turn: core calls it only when the chat's earlier turns had files.
    A pane of an unvoted blind comparison is NotFound, as everywhere else.
    """
    owner = check_owner(owner)
    conversation = owned_conversation(session, owner, conversation_id)
    query = (
        sa.select(_messages.c.position, _links.c.name, *_REF_COLUMNS, _attachments.c.text, _attachments.c.data)
        .select_from(_links)
        .join(_messages, _messages.c.id == _links.c.message_id)
        .join(_attachments, _attachments.c.id == _links.c.attachment_id)
        .where(
            _messages.c.conversation_id == conversation.id,
            _messages.c.owner == owner,
            _messages.c.attachment_count > 0,
            _attachments.c.owner == owner,
        )
        .order_by(_messages.c.position, _links.c.position)
    )
    found: dict[int, list[AttachmentData]] = {}
    for row in session.execute(query).mappings():
        values = dict(row)
        position = values.pop("position")
        values["data"] = bytes(values["data"])
        found.setdefault(position, []).append(AttachmentData.model_validate(values))
    return found
