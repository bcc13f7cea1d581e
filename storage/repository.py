"""Every read and write of conversations and messages, one keyword-only function each: the public facade.

The functions live in one module per concern and are re-exported here, so callers keep writing
`from storage import repository as repo; repo.begin_turn(...)`:

- storage/conversations.py: create, list, open, rename, pin, archive, delete
- storage/tree.py: get_path, switch_branch, set_leaf, delete_branch, fork_conversation, tree_of (messages
  form a tree: see there), AT_LEAF and EMPTY_PATH
- storage/turns.py: begin_conversation/begin_turn/begin_reply, finish_turn, save_partial, mark_interrupted, truncate_after, set_feedback
- storage/search.py: search_messages (full-text, per dialect)
- storage/stats.py: usage_stats, and usage_over_time (every bucket of a chart in one grouped query)
- storage/exchange.py: export_json, export_markdown, import_json (the file format is storage/transfer.py)
- storage/comparisons.py: compare runs, costs, votes, their exports and the leaderboard's votes
- storage/sharing.py: create_share_link, list_share_links, revoke_share_link, and what a token shows
  (shared_view, shared_attachment; only a hash of each token is stored)
- storage/attachments.py: get_attachment (one file with its bytes), conversation_attachments (a chat's
  files by message position); begin_turn/begin_comparison take `attachments=[AttachmentIn | chat Attachment]`

Each function takes the caller's `session` and the `owner` whose rows it may touch, and filters
by that owner: another owner's id behaves exactly like an unknown one (NotFound). Functions that
write commit before returning, so one call is one transaction; none opens a session of its own.
Database failures come out as the StorageError hierarchy (storage/errors.py), never as raw
SQLAlchemy exceptions, and a failed call leaves the session rolled back and usable: every public
function is wrapped in the one guard, storage.guard.guarded.

Patch a function where it is defined (e.g. storage.turns.finish_turn) only if the caller looks it
up there; callers of this facade look it up here.
"""

from __future__ import annotations

from storage.attachments import AttachmentIn, conversation_attachments, get_attachment
from storage.comparisons import (
    MAX_COMPARISON_EXPORT,
    begin_comparison,
    comparison_votes,
    export_comparisons,
    get_comparison,
    set_comparison_costs,
    vote_comparison,
)
from storage.conversations import (
    MAX_PAGE,
    create_conversation,
    delete_conversation,
    get_conversation,
    list_conversations,
    rename_conversation,
    set_archived,
    set_pinned,
)
from storage.exchange import PANE_NOT_EXPORTED, export_json, export_markdown, import_json
from storage.search import MAX_SEARCH_HITS, search_messages
from storage.sharing import (
    MAX_SHARE_LINKS,
    NOT_SHARED,
    create_share_link,
    list_share_links,
    revoke_share_link,
    shared_attachment,
    shared_view,
)
from storage.stats import MIN_RATE_TOKENS, usage_over_time, usage_stats
from storage.tree import AT_LEAF, EMPTY_PATH, delete_branch, fork_conversation, get_path, set_leaf, switch_branch, tree_of
from storage.turns import begin_conversation, begin_reply, begin_turn, finish_turn, mark_interrupted, save_partial, set_feedback, truncate_after

__all__ = [
    "AT_LEAF",
    "AttachmentIn",
    "EMPTY_PATH",
    "MAX_COMPARISON_EXPORT",
    "MAX_PAGE",
    "MAX_SEARCH_HITS",
    "MAX_SHARE_LINKS",
    "MIN_RATE_TOKENS",
    "NOT_SHARED",
    "PANE_NOT_EXPORTED",
    "begin_comparison",
    "begin_reply",
    "begin_conversation",
    "begin_turn",
    "comparison_votes",
    "conversation_attachments",
    "create_conversation",
    "create_share_link",
    "delete_branch",
    "delete_conversation",
    "export_comparisons",
    "export_json",
    "export_markdown",
    "finish_turn",
    "fork_conversation",
    "get_attachment",
    "get_comparison",
    "get_conversation",
    "get_path",
    "import_json",
    "list_conversations",
    "list_share_links",
    "mark_interrupted",
    "rename_conversation",
    "revoke_share_link",
    "save_partial",
    "search_messages",
    "set_archived",
    "set_comparison_costs",
    "set_feedback",
    "set_leaf",
    "set_pinned",
    "shared_attachment",
    "shared_view",
    "switch_branch",
    "tree_of",
    "truncate_after",
    "usage_over_time",
    "usage_stats",
    "vote_comparison",
]
