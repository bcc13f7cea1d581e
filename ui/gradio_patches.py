"""A measured fix to Gradio 6.31's per-session start-up cost, applied only to that exact version.

Each new browser session (and each gradio_client) gets a `SessionState`, whose constructor
builds the config of every block in the app, only so that a session's updated values can be
served for deep links. With Parley's four tabs that is ~15 ms of event-loop time per new
session on these machines: 20 users arriving together waited ~0.3 s for it in a row before
anything else ran. Here each block's config is built when a session first touches that block
(its inputs and outputs: a dozen blocks for a chat turn), and the whole dict only if something
reads all of it (deep links). The result is the dict Gradio would have built, entry by entry.
"""

from __future__ import annotations

import datetime
import logging

import gradio

log = logging.getLogger("parley.patches")

PATCHED_VERSION = "6.31.0"


def lazy_session_config() -> bool:
    """Make SessionState.config_values lazy; returns whether the patch is active."""
    from gradio import state_holder

    cls = state_holder.SessionState
    if getattr(cls, "_parley_lazy_config", False):
        return True
    if gradio.__version__ != PATCHED_VERSION:
        log.info("gradio %s: the session-config patch is for %s only; not applied", gradio.__version__, PATCHED_VERSION)
        return False
    original_init = cls.__init__

    def __init__(self, blocks):  # type: ignore[no-untyped-def]
        # Run Gradio's own constructor with the block list hidden, so the eager dict is empty...
        self.__dict__["_parley_blocks"] = blocks
        self.__dict__["_parley_config"] = None
        original_init(self, _NoBlocks(blocks))

    def _get(self):  # type: ignore[no-untyped-def]
        config = self.__dict__.get("_parley_config")
        if config is None:
            # ...and build it when something reads all of it, exactly as Gradio's constructor
            # would, keeping the entries this session already built and changed.
            blocks = self.__dict__["_parley_blocks"]
            touched = self.__dict__.get("_parley_touched", {})
            config = {
                k: touched[k] if k in touched else self.blocks_config.config_for_block(k, [], v)
                for k, v in self.blocks_config.blocks.items()
                if k in blocks.blocks
            }
            config.update({k: v for k, v in touched.items() if k not in config})
            self.__dict__["_parley_config"] = config
        return config

    def _entries(self):  # type: ignore[no-untyped-def]
        """The dict to read and write single entries in: the full one if built, else the touched ones."""
        full = self.__dict__.get("_parley_config")
        return full if full is not None else self.__dict__.setdefault("_parley_touched", {})

    def __setitem__(self, key, value):  # type: ignore[no-untyped-def]
        from gradio.components import State

        block = self.blocks_config.blocks.get(key)
        if isinstance(block, State):
            self._state_ttl[key] = (block.time_to_live, datetime.datetime.now())
            self.state_data[key] = value
        else:
            self.blocks_config.blocks[key] = value
        if block:
            _entries(self)[key] = self.blocks_config.config_for_block(key, [], block)

    def _update_config(self, key):  # type: ignore[no-untyped-def]
        if self[key] is not None:
            _entries(self)[key] = self.blocks_config.config_for_block(key, [], self[key])

    def _update_value_in_config(self, key, value):  # type: ignore[no-untyped-def]
        entries = _entries(self)
        if key not in entries:
            entries[key] = self.blocks_config.config_for_block(key, [], self.blocks_config.blocks[key])
        if "props" in entries[key]:
            entries[key]["props"]["value"] = value

    def _set(self, value):  # type: ignore[no-untyped-def]
        # Gradio's constructor assigns the (empty) eager dict: keep building lazily.
        if value == {} and self.__dict__.get("_parley_config") is None:
            return
        self.__dict__["_parley_config"] = value

    cls.__init__ = __init__
    cls.config_values = property(_get, _set)
    # The same bodies as Gradio 6.31's, writing single entries without building the whole dict.
    cls.__setitem__ = __setitem__
    cls._update_config = _update_config
    cls._update_value_in_config = _update_value_in_config
    cls._parley_lazy_config = True
    return True


class _NoBlocks:
    """The Blocks as Gradio's SessionState constructor sees it: same config, no blocks to list."""

    def __init__(self, blocks):  # type: ignore[no-untyped-def]
        self.default_config = blocks.default_config
        self.blocks: dict = {}
