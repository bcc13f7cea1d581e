"""6. Which states an event must watch, found once per event instead of on every update (`tracked_states_once`).

Before and after every call of an event's function, streamed updates included, Gradio 6.31 lists the event's
stateful outputs that some event listens to the `change` of (`Blocks.get_state_ids_to_track`), by scanning every
event of the app for each such output: for Parley's `/chat` two states against 133 events, twice per streamed
update. In a burst of 100 streams that scan was 3-5% of the event loop's time (bench/README.md, "Issue 20"). The
answer depends only on the event and the app's listeners, which do not change while the app runs unless it
renders blocks dynamically (`gr.render` adds and removes listeners per session); so it is kept per event and
recomputed whenever the session's listeners are a different or resized set, and never cached for an app with
renderables. The values are still hashed on every call, as Gradio does, so `change` fires exactly as before.
Part of `ui.gradio_patches.apply_all` (same version check, same PARLEY_GRADIO_PATCHES=off switch).
"""

from __future__ import annotations

import weakref
from typing import Any


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
    # Per event (of whichever app): ((id of the session's listeners dict, its size), the ids of the outputs to watch).
    # Sessions get copies of the listeners dict; within one app without renderables every copy lists the same ones.
    found: weakref.WeakKeyDictionary[Any, tuple[tuple[int, int], list[int]]] = weakref.WeakKeyDictionary()

    def get_state_ids_to_track(self: Any, block_fn: Any, state: Any) -> Any:
        if state is None or self.renderables:
            return original(self, block_fn, state)
        fns = state.blocks_config.fns
        key = (id(fns), len(fns))
        hit = found.get(block_fn)
        if hit is None or hit[0] != key:
            listened = {target[0] for fn in fns.values() for target in fn.targets if target[1] == "change"}
            hit = found[block_fn] = (key, [b._id for b in block_fn.outputs if b.stateful and b._id in listened])
        ids = hit[1]
        deep_hash: Any = utils.deep_hash  # untyped in Gradio
        return list(ids), [deep_hash(state[i]) for i in ids]

    get_state_ids_to_track._parley_once = True  # type: ignore[attr-defined]  # marks the patch as applied
    get_state_ids_to_track._parley_original = original  # type: ignore[attr-defined]  # the tests compare with it
    blocks_cls.get_state_ids_to_track = get_state_ids_to_track
    return True
