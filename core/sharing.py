"""Share by link, as use cases: an owner makes, lists and revokes read-only links; anyone with a link reads it.

The rules, once for every surface (the sidebar's Share panel, the Compare tab's Share button, the
page at `/share/<token>`):

- only the owner of a chat or a comparison can link it (another owner's id is not found, as in
  storage); a compare pane's conversation is shared with its comparison, never alone;
- a conversation's link shows its current path (as the owner sees it at the time of reading), or,
  when made with `whole_tree`, every version of every message too (retries and edits);
- a link is `/share/<token>`; the token is shown once, when it is made (storage keeps only its
  hash), so the list names each link by what it shows and when it was made;
- a reader with the token sees what `storage.sharing.shared_view` returns and nothing else of the
  owner's, and only the files that view shows; a revoked, unknown or malformed token, or one
  whose conversation or comparison was deleted, reads as nothing at all (None), the same for all;
- a blind comparison's link names no model until the owner's vote reveals them.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.services import Services
from storage import repository as repo
from storage.errors import NotFound, StorageError
from storage.models import AttachmentData, SharedView, ShareLinkPublic

#: Where the shared page answers (ui/share_page.py); a link is this followed by its token.
SHARE_PREFIX = "/share/"
NO_CONVERSATION = "Open a saved conversation first: a new chat is saved, and can be shared, after its first reply."
NO_COMPARISON = "Run a comparison first: the Share button shares the last run once it is saved."


class SharingError(Exception):
    """A sharing use case was refused or failed; `message` says why, in words a user can act on."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Created:
    """A link just made: what it shows, and its path (the only time the token is available)."""

    link: ShareLinkPublic
    path: str


def share_path(token: str) -> str:
    """The path of the shared page of this token (below the app's root URL)."""
    return f"{SHARE_PREFIX}{token}"


class Sharing:
    """Share links of one deployment; each owner method takes the owner the caller resolved."""

    def __init__(self, services: Services):
        self.s = services

    async def share_conversation(self, owner: str, conversation_id: str | None, whole_tree: bool = False) -> Created:
        """A new read-only link to one of this owner's saved chats: its current path, or every version."""
        if not conversation_id:
            raise SharingError(NO_CONVERSATION)
        return await self._create(owner, conversation_id=conversation_id, whole_tree=whole_tree)

    async def share_comparison(self, owner: str, comparison_id: str | None) -> Created:
        """A new read-only link to one of this owner's compare runs (names hidden until a blind run's vote)."""
        if not comparison_id:
            raise SharingError(NO_COMPARISON)
        return await self._create(owner, comparison_id=comparison_id)

    async def _create(self, owner: str, **target: str | bool) -> Created:
        try:
            new = await self.s.db(repo.create_share_link, owner=owner, **target)
        except StorageError as e:
            raise SharingError(f"Not shared: {e.message}") from e
        return Created(link=new.link, path=share_path(new.token))

    async def links(self, owner: str) -> list[ShareLinkPublic]:
        """This owner's live links, newest first."""
        try:
            return await self.s.db(repo.list_share_links, owner=owner)
        except StorageError as e:
            raise SharingError(e.message) from e

    async def revoke(self, owner: str, link_id: str | None) -> None:
        """End one of this owner's links: from now on it shows nothing."""
        if not link_id:
            raise SharingError("Pick a link to revoke.")
        try:
            await self.s.db(repo.revoke_share_link, owner=owner, link_id=link_id)
        except NotFound as e:
            raise SharingError("That link is already revoked (or is not yours).") from e
        except StorageError as e:
            raise SharingError(f"Not revoked: {e.message}") from e

    async def view(self, token: str) -> SharedView | None:
        """What this token's link shows, or None when it shows nothing; SharingError when the database failed."""
        try:
            return await self.s.db(repo.shared_view, token=token)
        except NotFound:
            return None
        except StorageError as e:
            raise SharingError(e.message) from e

    async def file(self, token: str, attachment_id: str) -> AttachmentData | None:
        """One file the token's page shows, with its bytes; None for any other file or a dead link."""
        try:
            return await self.s.db(repo.shared_attachment, token=token, attachment_id=attachment_id)
        except NotFound:
            return None
        except StorageError as e:
            raise SharingError(e.message) from e
