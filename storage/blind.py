"""Blind secrecy: the one definition of what an unvoted blind comparison keeps hidden.

A blind comparison hides which model wrote which pane until its vote. Until then nothing that ties
a pane to its model may be read back: not the pane replies (their provider, model and metrics would
name the model on the dashboard), not the pane conversations holding them (their `model` column and
messages). Every read path of the repository that a user can reach filters with these predicates,
so the rule is written once, here, in SQL, and a new read path only has to use it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import FromClause
from sqlmodel import SQLModel

from storage.models import ComparisonPanePublic  # also registers the tables read below

# Aliases, so that a predicate used inside a query over the same tables (a comparison export joins
# comparison_pane and message too) correlates only through the column it is given.
_run = SQLModel.metadata.tables["comparison"].alias("secret_run")
_pane = SQLModel.metadata.tables["comparison_pane"].alias("secret_pane")
_vote = SQLModel.metadata.tables["comparison_vote"].alias("secret_vote")
_reply = SQLModel.metadata.tables["message"].alias("secret_reply")

WITHHELD_ERROR = "This model failed; the provider's message is withheld until the vote."
HIDDEN_MESSAGE = "This conversation is a pane of a blind comparison that has no vote yet: vote in the Compare tab first."


def unvoted_blind(comparison: FromClause) -> ColumnElement[bool]:
    """True for a row of `comparison` (the table or an alias of it) that is blind and has no vote yet."""
    return sa.and_(comparison.c.blind.is_(True), ~sa.exists().where(_vote.c.comparison_id == comparison.c.id))


def secret_reply(message_id: ColumnElement[Any]) -> ColumnElement[bool]:
    """True for a message that is a pane reply of an unvoted blind comparison."""
    return sa.exists().where(_pane.c.message_id == message_id, _run.c.id == _pane.c.comparison_id, unvoted_blind(_run))


def secret_conversation(conversation_id: Any) -> ColumnElement[bool]:
    """True for a (pane) conversation that holds a reply of an unvoted blind comparison.

    `conversation_id` is the id column of an enclosing query, or one id.
    """
    return sa.exists().where(_reply.c.conversation_id == conversation_id, secret_reply(_reply.c.id))


def withhold(pane: ComparisonPanePublic) -> ComparisonPanePublic:
    """A pane of an unvoted blind run as it may be read: text and timings, nothing naming the model.

    The live blind panes show the text and metrics too; the rest waits for the vote: the names,
    the settings that tell the panes apart, the cost (the price table names the model), the
    provider's error message and the tool calls (the model writes their arguments), and the
    reproducibility card (the SDK and the request id name the provider; the hash tells system prompts apart).
    """
    message = pane.message.model_copy(update=dict(
        provider=None, model=None, model_version=None, params=None, tool_calls=None,
        request_id=None, sdk_version=None, system_prompt_sha256=None,
        error=None if pane.message.error is None else WITHHELD_ERROR,
    ))  # fmt: skip
    return pane.model_copy(update=dict(system_prompt=None, cost_usd=None, message=message))
