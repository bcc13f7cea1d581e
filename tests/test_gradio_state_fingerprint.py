"""`fingerprint` (ui/gradio_patch_states.py) stands in for Gradio's `deep_hash`, which only ever compares two
values' digests to tell whether a watched state changed: two fingerprints must be equal exactly when the two
digests are, for the values a state holds (chat messages, ids, settings) and for deep_hash's odd equalities."""

from __future__ import annotations

import enum
import math
import types
from dataclasses import dataclass

import gradio as gr
from gradio import utils
from hypothesis import given, settings
from hypothesis import strategies as st

from ui.gradio_patch_states import fingerprint, states_fingerprinted


def _pristine_deep_hash():
    """Gradio's deep_hash, calling itself: the original recurses through the module's global `deep_hash`, which is
    the patched one once the patch is applied in this process."""
    original = getattr(utils.deep_hash, "_parley_original", utils.deep_hash)
    namespace = dict(original.__globals__)
    copy = types.FunctionType(original.__code__, namespace, "deep_hash")
    namespace["deep_hash"] = copy
    return copy


deep_hash = _pristine_deep_hash()


class Colour(enum.StrEnum):
    RED = "red"


class Plain(str):
    pass


class Size(enum.IntEnum):
    ONE = 1


@dataclass(frozen=True)
class Frozen:
    a: int


unhashable = {"x": 1}.keys()  # hashable? no: dict views are not Hashable
message = gr.ChatMessage(role="assistant", content="hi")

TRICKY = [
    "", "a", "1", "'a'", "b'1'", Plain("a"), Colour.RED, "red", 1, 1.0, True, False, 0, -0.0, 0.0, math.nan, math.inf,
    Size.ONE, b"", b"a", b"1", None, [], (), {}, set(), frozenset(), [1], (1,), {1}, [1, 2], [2, 1], {1: 2}, {"1": 2},
    {1.0: 2}, {"a": 1, "b": 2}, {"b": 2, "a": 1}, [[]], [{}], [()], ["a", ["b"]], ("a", ("b",)), {"a": [1]}, {"a": (1,)},
    Frozen(1), Frozen(2), message, unhashable, str(hash(None)).encode(), [None], {"r": "1"}, [("r", "1")],
    [{"role": "user", "content": "hi"}], [{"role": "user", "content": "hi!"}], [{"content": "hi", "role": "user"}],
]


def test_every_pair_of_tricky_values_compares_as_deep_hash_does():
    from ui.gradio_patches import _version_ok

    assert states_fingerprinted(_version_ok)  # applied first: the comparison must not depend on the order of tests
    fps = [fingerprint(v) for v in TRICKY]
    digests = [deep_hash(v) for v in TRICKY]
    checked = 0
    for i in range(len(TRICKY)):
        for j in range(len(TRICKY)):
            assert (fps[i] == fps[j]) == (digests[i] == digests[j]), (TRICKY[i], TRICKY[j])
            checked += digests[i] == digests[j] and i != j
    assert checked >= 6, "the list lost the pairs deep_hash calls equal (list/tuple, {} and [], ...)"


leaves = st.one_of(st.text(max_size=8), st.integers(-3, 3), st.booleans(), st.none(), st.floats(allow_nan=True),
                   st.binary(max_size=4))
values = st.recursive(leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple),
    st.dictionaries(st.one_of(st.text(max_size=4), st.integers(-2, 2)), inner, max_size=4)), max_leaves=12)


def _variant(value, how: int):
    """The same value rebuilt (copies of every container), or with lists and tuples swapped."""
    if isinstance(value, dict):
        return {k: _variant(v, how) for k, v in reversed(list(value.items()))}
    if isinstance(value, (list, tuple)):
        items = [_variant(v, how) for v in value]
        return (tuple(items) if isinstance(value, list) else items) if how else type(value)(items)
    if isinstance(value, str):
        return "".join(list(value))  # a new object with the same text
    return value


@settings(max_examples=300, deadline=None)
@given(values, values, st.integers(0, 1))
def test_random_values_compare_as_deep_hash_does(a, b, how):
    for x, y in ((a, b), (a, _variant(a, how)), (b, _variant(a, how))):
        assert (fingerprint(x) == fingerprint(y)) == (deep_hash(x) == deep_hash(y)), (x, y)


def test_a_chat_that_grows_or_changes_is_seen_to_change():
    chat = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "Hi"}]
    before = fingerprint(chat)
    chat[1] = {**chat[1], "content": "Hi there"}
    assert fingerprint(chat) != before
    assert fingerprint(chat) == fingerprint([dict(m) for m in chat])


def test_the_patch_replaces_deep_hash_and_keeps_the_original():
    from ui.gradio_patches import _version_ok

    assert states_fingerprinted(_version_ok)
    assert utils.deep_hash._parley_fingerprint
    assert utils.deep_hash([1]) == fingerprint([1])
    assert utils.deep_hash._parley_original.__code__ is deep_hash.__code__
