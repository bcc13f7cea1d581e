"""Full-text search: matching, snippets, and hostile input that must stay plain words."""

from __future__ import annotations

import re
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect

from storage import repository as repo
from storage import search as fts
from tests.storage.helpers import add_turn, chat

HOSTILE = [
    '"',
    '""',
    "'",
    "a\"b",
    "*",
    "NEAR(a b)",
    "a OR b",
    "a AND NOT b",
    "-a",
    "^start",
    "col:term",
    "{content}: x",
    "(((",
    ")",
    "'; DROP TABLE message; --",
    "\\",
    "%_",
    "a & b | !c <-> d",
    "x:*",
    "\x00",
    "   ",
    "",
    "🙂",
    "ﾟ･✿ヾ╲(｡◕‿◕｡)╱✿･ﾟ",
    "e\u0301",
    "a" * 10_000,
    " ".join(["w"] * 100),
]


def test_finds_words_in_content_and_reasoning(session):
    conversation, turns = chat(session, "alice", [("How do I bake bread?", "Use flour and water.")])
    ids = repo.begin_turn(session=session, owner="alice", conversation_id=conversation, content="And cake?")
    repo.finish_turn(session=session, owner="alice", message_id=ids.assistant_message_id, content="Yes.", reasoning="Think about sugar.", finish_reason="stop")
    hit = repo.search_messages(session=session, owner="alice", query="BREAD")
    assert [(h.message_id, h.conversation_id, h.role) for h in hit] == [(turns[0].user_message_id, conversation, "user")]
    assert hit[0].title == "How do I bake bread?"
    assert hit[0].snippet == "How do I bake <mark>bread</mark>?"
    reasoning_hit = repo.search_messages(session=session, owner="alice", query="sugar")
    assert [h.message_id for h in reasoning_hit] == [ids.assistant_message_id]
    assert "<mark>sugar</mark>" in reasoning_hit[0].snippet


def test_every_word_must_match(session):
    chat(session, "alice", [("red apple", "green pear")])
    assert len(repo.search_messages(session=session, owner="alice", query="red apple")) == 1
    assert repo.search_messages(session=session, owner="alice", query="red pear") == []
    assert repo.search_messages(session=session, owner="alice", query="app") == []  # whole words only


def test_newest_first_and_limit(session):
    conversation = repo.create_conversation(session=session, owner="alice").id
    for i in range(5):
        add_turn(session, "alice", conversation, f"topic number {i}", f"reply {i}")
    hits = repo.search_messages(session=session, owner="alice", query="topic", limit=3)
    assert [h.snippet for h in hits] == [f"<mark>topic</mark> number {i}" for i in (4, 3, 2)]


def test_index_follows_finish_truncate_and_delete(session):
    conversation = repo.create_conversation(session=session, owner="alice").id
    ids = repo.begin_turn(session=session, owner="alice", conversation_id=conversation, content="question")
    assert repo.search_messages(session=session, owner="alice", query="zebra") == []
    repo.finish_turn(session=session, owner="alice", message_id=ids.assistant_message_id, content="zebra stripes", finish_reason="stop")
    assert [h.message_id for h in repo.search_messages(session=session, owner="alice", query="zebra")] == [ids.assistant_message_id]
    repo.truncate_after(session=session, owner="alice", conversation_id=conversation, position=1)
    assert repo.search_messages(session=session, owner="alice", query="zebra") == []
    assert len(repo.search_messages(session=session, owner="alice", query="question")) == 1
    repo.delete_conversation(session=session, owner="alice", conversation_id=conversation)
    assert repo.search_messages(session=session, owner="alice", query="question") == []


def test_snippet_escapes_html_and_marks_matches(session):
    chat(session, "alice", [("<script>alert('x')</script> look at the needle & <b>needle</b>", "ok")])
    (hit,) = repo.search_messages(session=session, owner="alice", query="needle")
    assert "<script>" not in hit.snippet and "<b>" not in hit.snippet
    assert hit.snippet == (
        "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; look at the <mark>needle</mark> &amp; "
        "&lt;b&gt;<mark>needle</mark>&lt;/b&gt;"
    )
    # Removing the marks and unescaping gives back the original text.
    import html

    assert html.unescape(hit.snippet.replace("<mark>", "").replace("</mark>", "")).startswith("<script>")


def test_snippet_is_a_window_around_the_first_match(session):
    text = "filler " * 200 + "the needle is here " + "more " * 200
    chat(session, "alice", [(text, "ok")])
    (hit,) = repo.search_messages(session=session, owner="alice", query="needle")
    assert hit.snippet.startswith("…") and hit.snippet.endswith("…")
    assert "<mark>needle</mark>" in hit.snippet
    assert len(hit.snippet) < 300


def test_quotes_and_operators_are_searched_as_words(session):
    chat(session, "alice", [('She said "NEAR OR AND" twice', "fine")])
    assert len(repo.search_messages(session=session, owner="alice", query='"NEAR')) == 1
    assert len(repo.search_messages(session=session, owner="alice", query="OR")) == 1
    assert repo.search_messages(session=session, owner="alice", query="NOT") == []


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_never_fail(session, engine, query):
    chat(session, "alice", [("harmless words here", "fine")])
    hits = repo.search_messages(session=session, owner="alice", query=query)
    assert hits == []
    assert {"conversation", "message"} <= set(inspect(engine).get_table_names())
    assert len(repo.search_messages(session=session, owner="alice", query="harmless")) == 1


# --- the query builder ----------------------------------------------------------------------

_QUOTED = r'"(?:[^"]|"")*"'
_GRAMMAR = re.compile(rf'^owner_key : "o[0-9a-f]+" AND \{{content reasoning\}} : \(({_QUOTED}(?: AND {_QUOTED})*)\)$', re.S)


@given(text=st.text(max_size=300), owner=st.text(min_size=1, max_size=40))
@settings(max_examples=400, deadline=None)
def test_builder_output_is_only_quoted_strings(text, owner):
    terms = fts.search_terms(text)
    assert len(terms) <= fts.MAX_TERMS
    if not terms:
        return
    query = fts.fts5_query(terms, owner)
    match = _GRAMMAR.match(query)
    assert match, query
    # Unquoting each string gives back exactly the user's chunk: nothing was left as syntax.
    quoted = re.findall(_QUOTED, match.group(1))
    assert [q[1:-1].replace('""', '"') for q in quoted] == terms
    assert all("\x00" not in t for t in terms)


@given(text=st.text(max_size=200))
@settings(max_examples=400, deadline=None)
def test_builder_output_never_raises_in_fts5(fts5_memory, text):
    terms = fts.search_terms(text)
    if terms:
        fts5_memory.execute("SELECT rowid FROM f WHERE f MATCH ?", (fts.fts5_query(terms, "alice"),)).fetchall()


@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=100))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_text_searches_safely_on_the_database(session, text):
    hits = repo.search_messages(session=session, owner="alice", query=text)
    assert isinstance(hits, list)


@given(word=st.text(alphabet=st.characters(categories=["Ll", "Lu", "Nd"]), min_size=1, max_size=12))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_stored_word_is_found_by_itself(session, word):
    conversation, turns = chat(session, "hypo", [(f"alpha {word} omega", "reply")])
    try:
        hits = repo.search_messages(session=session, owner="hypo", query=word)
        assert turns[0].user_message_id in [h.message_id for h in hits]
    finally:
        repo.delete_conversation(session=session, owner="hypo", conversation_id=conversation)


@pytest.fixture(scope="module")
def fts5_memory():
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE VIRTUAL TABLE f USING fts5(owner_key, content, reasoning, content='', tokenize='unicode61 remove_diacritics 2')")
    connection.execute("INSERT INTO f(rowid, owner_key, content, reasoning) VALUES (1, 'o' || hex('alice'), 'some words', '')")
    yield connection
    connection.close()


def test_snippet_builder_without_match_shows_the_start():
    assert fts.make_snippet("<i>plain</i> text", None, ["absent"]) == "&lt;i&gt;plain&lt;/i&gt; text"
    assert fts.make_snippet("x", None, []) == "x"


@pytest.mark.parametrize(
    ("text", "query"),
    [
        ("<script>steal()</script>", "steal"),
        ("<img src=x onerror=alert(1)>", "onerror"),
        ("see example.com today", "example"),
        ("see example.com today", "example.com"),
        ("mail user@example.org", "user"),
        ("path /usr/local/bin", "local"),
        ("version 3.14 released", "14"),
        ("snake_case_name", "case"),
        ("Ünïcödé wörds", "wörds"),
        ("日本語 テキスト", "テキスト"),
    ],
)
def test_words_inside_markup_and_tokens_are_found(session, text, query):
    _, turns = chat(session, "alice", [(text, "reply")])
    assert [h.message_id for h in repo.search_messages(session=session, owner="alice", query=query)] == [turns[0].user_message_id]


def test_search_migration_and_query_agree_on_separators():
    import importlib

    migration = importlib.import_module("storage.migrations.versions.0002_feedback_tools_search")
    assert migration.PG_SEPARATORS == fts.PG_SEPARATORS
