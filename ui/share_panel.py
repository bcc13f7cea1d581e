"""The owner's side of share links: the sidebar's Share panel and the Compare tab's Share button.

Thin handlers over core/sharing.py: each resolves the owner itself (core.identity.owner_for, as
every handler does: events are callable by index), makes or revokes the link there, and shows the
result. A new link is shown once, as a full URL built from the address the browser used (the token
is not stored, so it cannot be shown again); the list names each link by what it shows.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from core.identity import owner_for
from core.services import Services
from core.sharing import Created, Sharing, SharingError
from storage.models import SHARE_COMPARISON, ShareLinkPublic

SHOWN_ONCE = "Copy it now: Parley keeps only a fingerprint of it, so it cannot show it again."
#: What a conversation's link shows: the choice in the panel.
PATH, TREE = "path", "tree"
SCOPES = [("The conversation as shown", PATH), ("Every version (retries and edits too)", TREE)]


def absolute_url(request: gr.Request | None, path: str) -> str:
    """`path` below the app's public root URL, as Gradio itself works it out (proxies, root_path); else `path`."""
    inner = getattr(request, "request", None) if request is not None else None
    if inner is None:
        return path
    try:
        from gradio.route_utils import get_root_url

        root_path = inner.scope.get("root_path") or None
        route = inner.url.path
        if root_path and route.startswith(root_path):
            route = route[len(root_path):]
        return get_root_url(request=inner, route_path=route, root_path=root_path) + path
    except Exception:  # noqa: BLE001 - a link without a host still works when pasted on this site
        return path


def link_label(link: ShareLinkPublic) -> str:
    kind = "Comparison" if link.kind == SHARE_COMPARISON else "Chat"
    scope = " · every version" if link.whole_tree else ""
    return f"{kind}: {link.title}{scope} · {link.created_at:%Y-%m-%d %H:%M}"


class ShareHandlers:
    """Create, list and revoke links for the owner of the session."""

    def __init__(self, services: Services):
        self.sharing = Sharing(services)

    def _shown(self, created: Created, request: gr.Request | None) -> Any:
        return gr.update(value=absolute_url(request, created.path), visible=True)

    async def link_choices(self, owner_state: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None) -> Any:
        """The owner's live links, for the panel's list."""
        owner = owner_for(request, profile, owner_state)
        try:
            links = await self.sharing.links(owner)
        except SharingError as e:
            gr.Warning(e.message)
            return gr.skip()
        return gr.update(choices=[(link_label(link), str(link.id)) for link in links], value=None)

    async def share_conversation(self, conversation_id: str | None, scope: str | None, owner_state: str | None,
                                 request: gr.Request, profile: gr.OAuthProfile | None = None) -> tuple[Any, Any]:
        """A new link to the open conversation, of its current path or its whole tree: (the link box, the list)."""
        owner = owner_for(request, profile, owner_state)
        if scope not in (PATH, TREE):
            gr.Warning("Choose what the link shows: the conversation as shown, or every version.")
            return gr.skip(), gr.skip()
        try:
            created = await self.sharing.share_conversation(owner, conversation_id, whole_tree=scope == TREE)
        except SharingError as e:
            gr.Warning(e.message)
            return gr.skip(), gr.skip()
        gr.Info(f"Link created. {SHOWN_ONCE}")
        return self._shown(created, request), await self.link_choices(owner, request, profile)

    async def revoke(self, link_id: str | None, owner_state: str | None, request: gr.Request,
                     profile: gr.OAuthProfile | None = None) -> tuple[Any, Any]:
        """End the chosen link: (the link box, cleared; the list)."""
        owner = owner_for(request, profile, owner_state)
        try:
            await self.sharing.revoke(owner, link_id)
        except SharingError as e:
            gr.Warning(e.message)
            return gr.skip(), gr.skip()
        gr.Info("Link revoked: it shows nothing any more.")
        return gr.update(value="", visible=False), await self.link_choices(owner, request, profile)

    async def share_comparison(self, session: dict[str, Any] | None, owner_state: str | None, request: gr.Request,
                               profile: gr.OAuthProfile | None = None) -> Any:
        """A new link to the Compare tab's last run (its id is in the tab's server-side state)."""
        owner = owner_for(request, profile, owner_state)
        comparison_id = session.get("comparison_id") if isinstance(session, dict) and not session.get("running") else None
        try:
            created = await self.sharing.share_comparison(owner, comparison_id)
        except SharingError as e:
            gr.Warning(e.message)
            return gr.skip()
        gr.Info(f"Link created. {SHOWN_ONCE}")
        return self._shown(created, request)


def build_share_panel(services: Services, conversation_id: gr.State, owner: gr.State) -> ShareHandlers:
    """The Share panel (inside the sidebar's Manage conversation section) and its events."""
    handlers = ShareHandlers(services)
    private: dict[str, Any] = {"api_visibility": "private"}
    with gr.Accordion("🔗 Share", open=False, elem_id="share-panel") as panel:
        gr.Markdown("Anyone with a link can read the conversation (no sign-in); nothing else of yours. "
                    "Revoke a link to end it.", elem_classes=["parley-muted"])
        scope = gr.Radio(SCOPES, value=PATH, label="The link shows", elem_id="share-scope",
                         info="Other versions are the replies and messages that Retry and Edit kept.")
        create = gr.Button("🔗 Create a read-only link", size="sm", elem_id="share-create")
        link = gr.Textbox(label="New link", info=SHOWN_ONCE, interactive=False, visible=False, buttons=["copy"],
                          elem_id="share-link")
        links = gr.Dropdown(label="Your links", choices=[], value=None, elem_id="share-links")
        revoke = gr.Button("Revoke the chosen link", size="sm", variant="stop", elem_id="share-revoke")
    panel.expand(handlers.link_choices, [owner], [links], **private)
    create.click(handlers.share_conversation, [conversation_id, scope, owner], [link, links], **private)
    revoke.click(handlers.revoke, [links, owner], [link, links], **private)
    return handlers


def build_compare_share(services: Services, session: gr.State, owner: gr.State) -> ShareHandlers:
    """The Compare tab's "Share this run" button and the box its link appears in."""
    handlers = ShareHandlers(services)
    with gr.Row(equal_height=True, elem_id="cmp-share"):
        button = gr.Button("🔗 Share this run", size="sm", scale=1, min_width=160, elem_id="cmp-share-button")
        link = gr.Textbox(show_label=True, label="Read-only link", info=SHOWN_ONCE + " Revoke it in the sidebar's Share panel.",
                          interactive=False, visible=False, buttons=["copy"], scale=4, elem_id="cmp-share-link")
    button.click(handlers.share_comparison, [session, owner], [link], api_visibility="private")
    return handlers
