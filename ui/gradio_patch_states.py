"""6. The states an event must watch, and how their values are compared (`tracked_states_once`, `states_fingerprinted`).

Before and after every call of an event's function, streamed updates included, Gradio 6.31 lists the event's
stateful outputs that some event listens to the `change` of (`Blocks.get_state_ids_to_track`), by scanning every
event of the app for each such output: for Parley's `/chat` two states against 133 events, twice per streamed
update. In a burst of 100 streams that scan was 3-5% of the event loop's time (bench/README.md, "Issue 20"). The
answer depends only on the event and the app's listeners, which do not change while the app runs unless it
renders blocks dynamically (`gr.render` adds and removes listeners per session); so it is kept per event and
recomputed whenever the session's listeners are a resized set, and never cached for an app with renderables.
Every session holds its own copy of the app's listeners dict, so the copy's identity is not part of the key: it
was at first, and with several sessions streaming at once the scan was redone on nearly every update.

The watched values are then hashed before the call and after it, and `change` fires for those whose hash moved
(`utils.deep_hash`: a SHA-256 of the repr of every node). For `/chat` one of them is the whole chat, so every
streamed update hashed the conversation twice, its longest strings copied by `repr` and `encode` each time.
`fingerprint` gives a value that compares equal exactly when the two digests would (short of a SHA-256
collision) without hashing: the nodes' own strings are kept and compared, which is a pointer check for the
ones the update did not replace. Gradio only ever compares the two results, so it is swapped in as `deep_hash`.
Both are part of `ui.gradio_patches.apply_all` (same version check, same PARLEY_GRADIO_PATCHES=off switch).
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable
from typing import Any

_SCALARS = (int, float, str, bytes)


def fingerprint(obj: Any) -> Any:
    """A value equal to another's fingerprint exactly when Gradio 6.31's `deep_hash` gives both the same digest.

    `deep_hash` hashes the repr of a scalar, of a container's child digests, of a dict's (key, digest) pairs
    sorted by the key's hash, and otherwise of `hash(obj)` (or `id(obj)` when unhashable). So a list and a tuple
    with the same items hash alike, an empty dict like an empty list, 1 unlike 1.0 and True; the tags below
    keep exactly those equalities. A plain `str` stands for itself (its repr is equal exactly when it is).
    """
    if type(obj) is str:
        return obj
    if isinstance(obj, _SCALARS):
        return _scalar(obj)
    if isinstance(obj, dict):
        if not obj:
            return ("q", ())  # deep_hash({}) == deep_hash([]): both hash the repr of an empty tuple
        return ("m", tuple((_key(k), fingerprint(v)) for k, v in sorted(obj.items(), key=lambda kv: hash(kv[0]))))
    if isinstance(obj, (list, tuple)):
        return ("q", tuple(fingerprint(x) for x in obj))
    if isinstance(obj, set):
        return ("q", tuple(fingerprint(x) for x in sorted(obj, key=hash)))
    # deep_hash hashes these as the repr of bytes, which is why they share a scalar's tag.
    if isinstance(obj, Hashable):
        return ("r", repr(str(hash(obj)).encode("utf-8")))
    return ("r", repr(str(id(obj)).encode("utf-8")))


def _scalar(obj: Any) -> Any:
    """A value deep_hash hashes by its repr: the repr, or the plain str for a str whose repr is a str's."""
    if isinstance(obj, str) and type(obj).__repr__ is str.__repr__:
        return str(obj)  # a str subclass whose repr is a str's
    return ("r", repr(obj))


def _key(key: Any) -> Any:
    """A dict key as deep_hash sees it: its repr, as for a scalar whatever the key's type."""
    return key if type(key) is str else _scalar(key)


def states_fingerprinted(version_ok: Any) -> bool:
    """Replace `gradio.utils.deep_hash` (used only to tell whether a watched state changed) by `fingerprint`."""
    from gradio import utils

    if getattr(utils.deep_hash, "_parley_fingerprint", False):
        return True
    if not version_ok("states-fingerprinted"):
        return False

    def deep_hash(obj: Any) -> Any:
        return fingerprint(obj)

    deep_hash._parley_fingerprint = True  # type: ignore[attr-defined]  # marks the patch as applied
    deep_hash._parley_original = utils.deep_hash  # type: ignore[attr-defined]  # the tests compare with it
    utils.deep_hash = deep_hash
    return True


def tracked_states_once(version_ok: Any) -> bool:
    """Patch `Blocks.get_state_ids_to_track`; `version_ok(name)` is gradio_patches' version check."""
    from gradio import blocks as gradio_blocks
    from gradio import utils

    blocks_cls: Any = gradio_blocks.Blocks
    if getattr(blocks_cls.get_state_ids_to_track, "_parley_once", False):
        return True
    if not version_ok("tracked-states"):
        return False
    original = blocks_cls.get_state_ids_to_track
    # Per event (of whichever app): (how many listeners the session had, the ids of the outputs to watch). Without
    # renderables every session's listeners are a copy of the app's, so a different count is the only change to see.
    found: weakref.WeakKeyDictionary[Any, tuple[int, list[int]]] = weakref.WeakKeyDictionary()

    def get_state_ids_to_track(self: Any, block_fn: Any, state: Any) -> Any:
        if state is None or self.renderables:
            return original(self, block_fn, state)
        fns = state.blocks_config.fns
        size = len(fns)
        hit = found.get(block_fn)
        if hit is None or hit[0] != size:
            listened = {target[0] for fn in fns.values() for target in fn.targets if target[1] == "change"}
            hit = found[block_fn] = (size, [b._id for b in block_fn.outputs if b.stateful and b._id in listened])
        ids = hit[1]
        deep_hash: Any = utils.deep_hash  # untyped in Gradio
        return list(ids), [deep_hash(state[i]) for i in ids]

    get_state_ids_to_track._parley_once = True  # type: ignore[attr-defined]  # marks the patch as applied
    get_state_ids_to_track._parley_original = original  # type: ignore[attr-defined]  # the tests compare with it
    blocks_cls.get_state_ids_to_track = get_state_ids_to_track
    return True
