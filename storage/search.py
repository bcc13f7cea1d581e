"""Turning what a user typed into a safe full-text query, and highlighting what it matched.

User text never becomes SQL: for SQLite it becomes an FTS5 expression made only of double-quoted
strings (which FTS5 treats as plain words, whatever they contain), bound as a parameter; for
PostgreSQL the words are bound as a parameter to `plainto_tsquery`, which has no operators.
Every whitespace-separated chunk must appear (AND); matching is by whole word, case- and
accent-insensitive on SQLite, case-insensitive on PostgreSQL. `search_messages` is the query itself.
"""

from __future__ import annotations

import html
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeEngine
from sqlmodel import Session
from sqlmodel.sql.sqltypes import UTCDateTime

from storage.errors import InvalidInput, StorageError
from storage.guard import guarded
from storage.models import SearchHit
from storage.validation import check_owner

MAX_SEARCH_HITS = 200
MAX_TERMS = 16
MAX_TERM_CHARS = 64
SNIPPET_CHARS = 200
SNIPPET_LEAD = 60
MARK_OPEN = "<mark>"
MARK_CLOSE = "</mark>"

_WORD = re.compile(r"[^\W_]+")  # letters and digits: what both tokenizers keep
_SPACE = re.compile(r"\s+")


def search_terms(text: str) -> list[str]:
    """The chunks of `text` worth searching for (each has a letter or digit), bounded in number and size."""
    terms: list[str] = []
    for chunk in text.replace("\x00", " ").split():
        if _WORD.search(chunk):
            terms.append(chunk[:MAX_TERM_CHARS])
        if len(terms) == MAX_TERMS:
            break
    return terms


def owner_key(owner: str) -> str:
    """The single FTS5 token standing for `owner` (same as the trigger's `'o' || hex(owner)`)."""
    return "o" + owner.encode("utf-8").hex()


def fts5_quote(term: str) -> str:
    """`term` as an FTS5 string: inside double quotes every character is literal ("" is a quote)."""
    return '"' + term.replace('"', '""') + '"'


def fts5_query(terms: list[str], owner: str) -> str:
    """An FTS5 MATCH expression: this owner's messages containing every term in content or reasoning."""
    if not terms:
        raise ValueError("no search terms")
    words = " AND ".join(fts5_quote(t) for t in terms)
    return f"owner_key : {fts5_quote(owner_key(owner))} AND {{content reasoning}} : ({words})"


# Must equal PG_SEPARATORS in migration 0002: characters the indexed text had turned into spaces.
PG_SEPARATORS = "<>/@.:"
_PG_TRANSLATION = str.maketrans(PG_SEPARATORS, " " * len(PG_SEPARATORS))


def pg_query_text(terms: list[str]) -> str:
    """The text handed (as a bound parameter) to PostgreSQL's plainto_tsquery."""
    return " ".join(terms).translate(_PG_TRANSLATION)


def highlight_words(terms: list[str]) -> list[str]:
    """The words to mark in a snippet, longest first so a longer word wins over its prefix."""
    words = {w.casefold() for t in terms for w in _WORD.findall(t)}
    return sorted(words, key=lambda w: (-len(w), w))


def make_snippet(content: str, reasoning: str | None, words: list[str]) -> str:
    """An HTML-escaped excerpt around the first match, each match wrapped in <mark>…</mark>."""
    pattern = _match_pattern(words)
    source = content
    first = pattern.search(content) if pattern else None
    if first is None and reasoning and pattern:
        found = pattern.search(reasoning)
        if found:
            source, first = reasoning, found
    start = 0
    if first is not None and first.start() > SNIPPET_LEAD:
        start = first.start() - SNIPPET_LEAD
        # Begin at a word boundary so the excerpt does not open mid-word.
        space = source.find(" ", start, first.start())
        start = space + 1 if space != -1 else start
    end = min(len(source), start + SNIPPET_CHARS)
    window = source[start:end]
    parts: list[str] = []
    cursor = 0
    if pattern:
        for match in pattern.finditer(window):
            parts.append(_escape(window[cursor : match.start()]))
            parts.append(MARK_OPEN + _escape(match.group(0)) + MARK_CLOSE)
            cursor = match.end()
    parts.append(_escape(window[cursor:]))
    return ("…" if start > 0 else "") + "".join(parts) + ("…" if end < len(source) else "")


def _match_pattern(words: list[str]) -> re.Pattern[str] | None:
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in words)
    return re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])", re.IGNORECASE)


def _escape(text: str) -> str:
    return html.escape(_SPACE.sub(" ", text))


_HIT_COLUMNS: dict[str, TypeEngine[Any]] = dict(
    id=sa.Uuid(),
    conversation_id=sa.Uuid(),
    title=sa.String(),
    role=sa.String(),
    content=sa.Text(),
    reasoning=sa.Text(),
    created_at=UTCDateTime(),
)

_SQLITE_SEARCH = sa.text(
    """
    SELECT m.id, m.conversation_id, c.title, m.role, m.content, m.reasoning, m.created_at
    FROM message_fts
    JOIN message AS m ON m.rowid = message_fts.rowid
    JOIN conversation AS c ON c.id = m.conversation_id
    WHERE message_fts MATCH :query AND m.owner = :owner AND c.owner = :owner AND c.kind = 'chat'
    ORDER BY m.created_at DESC, m.position DESC
    LIMIT :limit
    """
).columns(**_HIT_COLUMNS)

_PG_SEARCH = sa.text(
    """
    SELECT m.id, m.conversation_id, c.title, m.role, m.content, m.reasoning, m.created_at
    FROM message AS m
    JOIN conversation AS c ON c.id = m.conversation_id
    WHERE m.search @@ plainto_tsquery('simple', :query) AND m.owner = :owner AND c.owner = :owner AND c.kind = 'chat'
    ORDER BY m.created_at DESC, m.position DESC
    LIMIT :limit
    """
).columns(**_HIT_COLUMNS)


@guarded
def search_messages(*, session: Session, owner: str, query: str, limit: int = 50) -> list[SearchHit]:
    """This owner's chat messages containing every word of `query`, newest first, with a marked snippet.

    Compare panes are left out: opening one from the sidebar would reveal a blind pane's model.

    Whatever `query` holds (quotes, operators, SQL) is searched for as words. A query without any
    letter or digit finds nothing.
    """
    owner = check_owner(owner)
    if not isinstance(query, str):
        raise InvalidInput("The search must be text.")
    if not isinstance(limit, int) or not 1 <= limit <= MAX_SEARCH_HITS:
        raise InvalidInput(f"The number of results must be between 1 and {MAX_SEARCH_HITS}.")
    terms = search_terms(query)
    if not terms:
        return []
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        statement, text = _SQLITE_SEARCH, fts5_query(terms, owner)
    elif dialect == "postgresql":
        statement, text = _PG_SEARCH, pg_query_text(terms)
    else:  # pragma: no cover - only the two supported backends have a migration with an index
        raise StorageError(f"Search is not available on {dialect}.")
    words = highlight_words(terms)
    rows = session.execute(statement, {"query": text, "owner": owner, "limit": limit}).mappings()
    return [
        SearchHit(
            conversation_id=r["conversation_id"],
            title=r["title"],
            message_id=r["id"],
            role=r["role"],
            snippet=make_snippet(r["content"], r["reasoning"], words),
            created_at=r["created_at"],
        )
        for r in rows
    ]
