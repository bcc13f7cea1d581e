"""Saved conversations as use cases: list and search, open, rename, pin, delete, export, import, undo, feedback,
and the branches of a conversation's tree: switch version, fork into a new conversation, delete a branch.

Every surface (the sidebar's handlers, an API, a CLI) calls these; the rules live here once. Each
method checks its inputs, runs storage in a worker thread (`Services.db`, one hop per call) and
returns plain data, or raises `ConversationError`, whose message is meant for the user.
Ownership is storage's rule: another owner's id is NotFound there, so it is refused here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlmodel import Session

from chat.context import clean_text
from chat.types import Params
from core.attachments import check_import, limits_of
from core.exports import ExportFiles
from core.services import Services
from core.store import undo_turn
from storage import repository as repo
from storage.errors import InvalidInput, NotFound, StorageError
from storage.guard import guarded, owned_conversation, owned_message
from storage.models import ConversationDetail, ConversationPublic, MessagePublic, SearchHit

#: Conversations in the list (one page).
PAGE = 50
#: Search results asked of storage.
SEARCH_LIMIT = 30
NO_CONVERSATION = "Open a conversation first."
#: Said when a link's conversation (`?c=<id>`) cannot be opened: another owner's, deleted, or malformed
#: look the same on purpose, so the answer tells nothing about other owners' ids.
NOT_YOURS = "The conversation in this link is not one of yours, or it no longer exists: nothing was opened."
#: Longest conversation id read from a link (a UUID is 36 characters); longer is refused unread.
MAX_LINK_ID = 64
#: Said when a message given to switch, fork or delete a branch is not one of this owner's conversation's:
#: another owner's, deleted, or of another conversation look the same on purpose.
NOT_A_MESSAGE = "That message is not in one of your conversations, or it no longer exists: nothing was changed."

Feedback = Literal["like", "dislike"]
ExportFormat = Literal["json", "md"]


class ConversationError(Exception):
    """A conversation use case was refused or failed; `message` says why, in words a user can act on."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Entry:
    """One conversation in the list: its id, title, and whether it is pinned."""

    id: str
    title: str
    pinned: bool = False


@dataclass(frozen=True)
class Listing:
    """The conversation list, or with a `query` the conversations whose messages match it (and the hits)."""

    entries: list[Entry]
    query: str = ""
    hits: list[SearchHit] = field(default_factory=list)


@dataclass(frozen=True)
class Focus:
    """The conversation list with the open conversation in it (`open` is None when none is open or it is gone)."""

    entries: list[Entry]
    open: Entry | None


@dataclass(frozen=True)
class Opened:
    """A saved conversation and what the chat restores with it: model, system prompt and parameters."""

    conversation: ConversationPublic
    messages: list[MessagePublic]
    model: str | None
    system_prompt: str
    temperature: float
    top_p: float
    max_tokens: int | None
    seed: int
    effort: str
    #: For each message shown that has other versions: the ids of its versions (itself included), oldest first.
    versions: dict[uuid.UUID, list[uuid.UUID]] = field(default_factory=dict)
    #: The last message shown (None: the path is empty).
    current_leaf_id: uuid.UUID | None = None
    #: How many stored messages are on other versions (not shown).
    other_messages: int = 0

    @property
    def id(self) -> str:
        return str(self.conversation.id)

    @property
    def title(self) -> str:
        return self.conversation.title


def download_stem(title: str) -> str:
    """A conversation's title as the stem of its export file's name."""
    name = re.sub(r"[^A-Za-z0-9._ -]+", "", title).strip().replace(" ", "-")[:60]
    return name or "conversation"


def opened(conversation: ConversationPublic, messages: list[MessagePublic], detail: ConversationDetail | None = None) -> Opened:
    """What opening `conversation` restores (defaults where it saved nothing), with the versions of its `detail`."""
    p = conversation.params or {}
    defaults = Params()
    return Opened(
        conversation=conversation,
        messages=messages,
        versions=dict(detail.versions) if detail else {},
        current_leaf_id=detail.current_leaf_id if detail else None,
        other_messages=detail.other_messages if detail else 0,
        model=conversation.model or None,
        system_prompt=conversation.system_prompt or "",
        temperature=p.get("temperature", defaults.temperature if defaults.temperature is not None else 1.0),
        top_p=p.get("top_p", 1.0),
        max_tokens=p.get("max_tokens", defaults.max_tokens),
        seed=p.get("seed") or 0,
        effort=p.get("effort") or "default",
    )


# -- storage steps run together in one worker-thread call ------------------------------------------


def _toggle_pin(*, session: Session, owner: str, conversation_id: str) -> ConversationPublic:
    detail = repo.get_conversation(session=session, owner=owner, conversation_id=conversation_id)
    return repo.set_pinned(session=session, owner=owner, conversation_id=conversation_id, pinned=not detail.conversation.pinned)


def _export_text(*, session: Session, owner: str, conversation_id: str | None, fmt: ExportFormat) -> tuple[str, str]:
    """The export's text and its file name's stem."""
    export = repo.export_json if fmt == "json" else repo.export_markdown
    text = export(session=session, owner=owner, conversation_id=conversation_id)
    stem = "parley-all-conversations"
    if conversation_id:
        detail = repo.get_conversation(session=session, owner=owner, conversation_id=conversation_id)
        stem = download_stem(detail.conversation.title)
    return text, stem


def _focus(*, session: Session, owner: str, conversation_id: str | None) -> Focus:
    """The first page of the list and the open conversation's entry, which is added to the page when it is
    further down, so that it can always be highlighted."""
    convs = repo.list_conversations(session=session, owner=owner, limit=PAGE, offset=0)
    entries = [Entry(str(c.id), c.title, c.pinned) for c in convs]
    if not conversation_id:
        return Focus(entries, None)
    found = next((e for e in entries if e.id == conversation_id), None)
    if found is None:
        try:
            detail = repo.get_conversation(session=session, owner=owner, conversation_id=conversation_id)
        except NotFound:
            return Focus(entries, None)  # deleted meanwhile (in another tab): nothing is open any more
        found = Entry(str(detail.conversation.id), detail.conversation.title, detail.conversation.pinned)
        entries.append(found)
    return Focus(entries, found)


def _import_file(*, session: Session, owner: str, path: Path, max_bytes: int,
                 check_attachment: Callable[[str, bytes], Any]) -> list[uuid.UUID]:
    try:
        if path.stat().st_size > max_bytes:
            raise InvalidInput(f"The file is larger than {max_bytes / (1024 * 1024):g} MB (MAX_IMPORT_MB).")
        data = path.read_bytes()
    except OSError as e:
        raise InvalidInput(str(e)) from e
    # Every attached file is checked again as an upload is (type from the bytes, limits, decoding,
    # metadata dropped): an export can be edited by hand, so its files are untrusted input.
    return repo.import_json(session=session, owner=owner, data=data, check_attachment=check_attachment)


def _set_feedback(*, session: Session, owner: str, conversation_id: str, turn_number: int, value: Feedback | None) -> bool:
    detail = repo.get_conversation(session=session, owner=owner, conversation_id=conversation_id)
    replies = [m for m in detail.messages if m.role == "assistant"]
    if not 0 < turn_number <= len(replies):
        return False
    repo.set_feedback(session=session, owner=owner, message_id=replies[turn_number - 1].id, feedback=value)
    return True


def _check_message(session: Session, owner: str, conversation_id: str, message_id: str) -> None:
    """NotFound unless the message is in this owner's conversation (a secret blind pane is NotFound too)."""
    conversation = owned_conversation(session, owner, conversation_id)
    if owned_message(session, owner, message_id).conversation_id != conversation.id:
        raise NotFound(NOT_A_MESSAGE)


@guarded
def _fork(*, session: Session, owner: str, conversation_id: str, message_id: str) -> ConversationDetail:
    _check_message(session, owner, conversation_id, message_id)
    copy = repo.fork_conversation(session=session, owner=owner, message_id=message_id)
    return repo.get_conversation(session=session, owner=owner, conversation_id=copy.id)


@guarded
def _delete_branch(*, session: Session, owner: str, conversation_id: str, message_id: str) -> ConversationDetail:
    _check_message(session, owner, conversation_id, message_id)
    repo.delete_branch(session=session, owner=owner, message_id=message_id)
    return repo.get_conversation(session=session, owner=owner, conversation_id=conversation_id)


# -- the use cases -------------------------------------------------------------------------------


class Conversations:
    """One owner's saved conversations; every method takes the owner the caller has resolved."""

    def __init__(self, services: Services, exports: ExportFiles):
        self.s = services
        self.exports = exports

    async def listing(self, owner: str, query: Any = "") -> Listing:
        """The newest page of conversations (pinned first), or with a query the ones whose messages match."""
        # Cleaned first: a lone surrogate would fail the search and then whatever echoes the query.
        query = clean_text(query if isinstance(query, str) else "").strip()
        try:
            if not query:
                convs = await self.s.db(repo.list_conversations, owner=owner, limit=PAGE, offset=0)
                return Listing([Entry(str(c.id), c.title, c.pinned) for c in convs])
            hits = await self.s.db(repo.search_messages, owner=owner, query=query, limit=SEARCH_LIMIT)
        except StorageError as e:
            raise ConversationError(e.message) from e
        seen: dict[str, str] = {}
        for h in hits:
            seen.setdefault(str(h.conversation_id), h.title)
        return Listing([Entry(cid, title) for cid, title in seen.items()], query=query, hits=hits)

    async def focus(self, owner: str, conversation_id: str | None) -> Focus:
        """The list with the open conversation in it, and that conversation's entry (its title), to highlight."""
        try:
            return await self.s.db(_focus, owner=owner, conversation_id=conversation_id or None)
        except StorageError as e:
            raise ConversationError(e.message) from e

    async def entry(self, owner: str, conversation_id: str | None) -> Entry:
        """One conversation's list entry (what Delete names before it deletes)."""
        opened_one = await self.open(owner, conversation_id)
        return Entry(opened_one.id, opened_one.title, opened_one.conversation.pinned)

    async def open_link(self, owner: str, link_id: Any) -> Opened:
        """The conversation a page's address names (`?c=<id>`), if this owner's; else NOT_YOURS.

        The id comes from the address bar, so it is untrusted: only a short string is looked up, and
        an id of another owner, a deleted one and a malformed one get the same answer.
        """
        if not isinstance(link_id, str) or not link_id.strip() or len(link_id) > MAX_LINK_ID:
            raise ConversationError(NOT_YOURS)
        try:
            detail = await self.s.db(repo.get_conversation, owner=owner, conversation_id=link_id.strip())
        except (NotFound, InvalidInput) as e:
            raise ConversationError(NOT_YOURS) from e
        except StorageError as e:
            raise ConversationError(e.message) from e
        return opened(detail.conversation, detail.messages, detail)

    async def open(self, owner: str, conversation_id: str | None) -> Opened:
        """A saved conversation with its messages, model, system prompt and parameters."""
        conversation_id = self._required(conversation_id)
        try:
            detail = await self.s.db(repo.get_conversation, owner=owner, conversation_id=conversation_id)
        except StorageError as e:
            raise ConversationError(e.message) from e
        return opened(detail.conversation, detail.messages, detail)

    async def rename(self, owner: str, conversation_id: str | None, title: Any) -> ConversationPublic:
        """Give a conversation a new title (one line; storage says what is too long or empty)."""
        conversation_id = self._required(conversation_id)
        if not isinstance(title, str):
            raise ConversationError("Not renamed: the title must be text.")
        try:
            return await self.s.db(repo.rename_conversation, owner=owner, conversation_id=conversation_id, title=clean_text(title))
        except StorageError as e:
            raise ConversationError(f"Not renamed: {e.message}") from e

    async def toggle_pin(self, owner: str, conversation_id: str | None) -> ConversationPublic:
        """Pin an unpinned conversation (listed first), unpin a pinned one."""
        conversation_id = self._required(conversation_id)
        try:
            return await self.s.db(_toggle_pin, owner=owner, conversation_id=conversation_id)
        except StorageError as e:
            raise ConversationError(e.message) from e

    async def delete(self, owner: str, conversation_id: str | None) -> None:
        """Delete a conversation and its messages."""
        conversation_id = self._required(conversation_id)
        try:
            await self.s.db(repo.delete_conversation, owner=owner, conversation_id=conversation_id)
        except StorageError as e:
            raise ConversationError(e.message) from e

    async def export(self, owner: str, conversation_id: str | None, fmt: str) -> Path:
        """A short-lived JSON or Markdown file of one conversation, or of all of them when none is given."""
        if fmt not in ("json", "md"):
            raise ConversationError(f"Unknown export format {str(fmt)[:20]!r}: json or md.")
        try:
            text, stem = await self.s.db(_export_text, owner=owner, conversation_id=conversation_id or None,
                                         fmt="json" if fmt == "json" else "md")
        except StorageError as e:
            raise ConversationError(e.message) from e
        return self.exports.write(owner, f"{stem}.{fmt}", text)

    async def import_file(self, owner: str, path: str | Path) -> list[str]:
        """Add the conversations of a Parley JSON export (all or nothing); returns their new ids."""
        try:
            created = await self.s.db(_import_file, owner=owner, path=Path(path), max_bytes=self.s.config.max_import_bytes,
                                      check_attachment=check_import(limits_of(self.s.config)))
        except StorageError as e:
            raise ConversationError(f"Import failed, nothing was saved: {e.message}") from e
        return [str(c) for c in created]

    async def undo(self, owner: str, conversation_id: str | None, kept_user_texts: list[str], undone: str) -> int:
        """Undo: an undone user message and what follows leave the path shown, if it is the stored one (nothing
        is deleted: they stay as another version); returns how many messages left the path.

        A conversation that is gone (or never saved) has nothing to undo: 0, not an error.
        """
        if not conversation_id:
            return 0
        try:
            return await self.s.db(undo_turn, owner=owner, conversation_id=conversation_id,
                                   kept_user_texts=kept_user_texts, undone=undone)
        except NotFound:
            return 0
        except StorageError as e:
            raise ConversationError(e.message) from e

    async def switch(self, owner: str, conversation_id: str | None, message_id: Any) -> Opened:
        """Show another version: the path through `message_id` down to its newest leaf (the next turn's context)."""
        return await self._branch(repo.switch_branch, owner, conversation_id, message_id)

    async def fork(self, owner: str, conversation_id: str | None, message_id: Any) -> Opened:
        """A new conversation holding a copy of the path down to `message_id` (model and settings too); opened."""
        return await self._branch(_fork, owner, conversation_id, message_id)

    async def delete_branch(self, owner: str, conversation_id: str | None, message_id: Any) -> Opened:
        """Delete `message_id` and every message after it (every version below it); the conversation as it is then.

        When the path shown went through it, another version of it is shown (the newest), or its parent.
        """
        return await self._branch(_delete_branch, owner, conversation_id, message_id)

    async def _branch(self, step: Callable[..., ConversationDetail], owner: str, conversation_id: str | None,
                      message_id: Any) -> Opened:
        conversation_id = self._required(conversation_id)
        # From a page's hidden field: untrusted. Checked here so a malformed id gets a plain answer.
        if not isinstance(message_id, str) or not message_id.strip():
            raise ConversationError("Choose a message first: no message was given, nothing was changed.")
        message_id = message_id.strip()
        try:
            if len(message_id) > MAX_LINK_ID:
                raise ValueError(message_id)
            uuid.UUID(message_id)
        except ValueError:
            raise ConversationError(f"{message_id[:40]!r} is not a message id: nothing was changed.") from None
        try:
            detail = await self.s.db(step, owner=owner, conversation_id=conversation_id, message_id=message_id)
        except NotFound as e:
            raise ConversationError(NOT_A_MESSAGE) from e
        except StorageError as e:
            raise ConversationError(e.message) from e
        return opened(detail.conversation, detail.messages, detail)

    async def feedback(self, owner: str, conversation_id: str | None, turn_number: int, value: Feedback | None) -> bool:
        """Like or dislike (None clears) the reply to the `turn_number`-th user message; False if there is none."""
        if not conversation_id:
            return False
        try:
            return await self.s.db(_set_feedback, owner=owner, conversation_id=conversation_id, turn_number=turn_number, value=value)
        except NotFound:
            return False
        except StorageError as e:
            raise ConversationError(e.message) from e

    @staticmethod
    def _required(conversation_id: str | None) -> str:
        if not conversation_id:
            raise ConversationError(NO_CONVERSATION)
        return conversation_id
