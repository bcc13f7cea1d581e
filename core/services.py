"""What the handlers need, built once at start-up: registry, database, limits, policy."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session

from chat.registry import Registry
from chat.turn import TurnPolicy
from core.config import AppConfig
from core.ratelimit import RateLimiter
from storage.db import db_threads
from storage.replicas import INSTANCE_KEY, Heartbeat, new_instance_id

T = TypeVar("T")
log = logging.getLogger("parley.services")


@dataclass
class Services:
    config: AppConfig
    registry: Registry
    engine: Engine
    limiter: RateLimiter
    policy: TurnPolicy
    #: Tools models may call (None when the operator's tools module failed to load).
    toolbox: Any = None
    #: The MCP servers whose tools are in the toolbox (chat/tools/mcp.py's McpHub), closed with the services.
    mcp: Any = None
    #: The built gr.Blocks (set by app.create_app).
    demo: Any = None
    #: Replies streaming now in this process (chat and compare panes).
    active_streams: int = 0

    def update_interval(self) -> float:
        """Seconds between a stream's UI updates: the configured pace, spaced out under load so that all
        streams together stay under `STREAM_UPDATES_PER_SECOND` (each update costs Gradio ~0.7 ms of CPU)."""
        return min(max(self.policy.coalesce_interval, self.active_streams / self.config.updates_per_second), 0.5)
    #: Set once every configured SDK is imported and its client built.
    warmed: threading.Event = field(default_factory=threading.Event)
    # Storage calls are synchronous: they run here, never on the event loop. No more threads than
    # the pool has connections (a thread without one would wait on the pool, not the database);
    # the engine's lock and statement timeouts bound how long any one call holds its thread.
    executor: ThreadPoolExecutor = field(init=False)
    #: This process's id in the `replica` table; recorded on the replies it streams.
    instance_id: str = field(default_factory=new_instance_id)
    #: Keeps this process's replica row fresh (started by app.create_app; None in most tests).
    heartbeat: Heartbeat | None = None

    def __post_init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=db_threads(self.engine), thread_name_prefix="parley-db")

    async def db(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        """Run a repository function in a worker thread with its own session."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(self._call, fn, kwargs))

    def _call(self, fn: Callable[..., T], kwargs: dict[str, Any]) -> T:
        with Session(self.engine, expire_on_commit=False, info={INSTANCE_KEY: self.instance_id}) as session:
            return fn(session=session, **kwargs)

    def start_heartbeat(self) -> int:
        """Announce this process and mark replies of stopped ones interrupted; returns how many."""
        self.heartbeat = Heartbeat(self.engine, self.instance_id)
        return self.heartbeat.start()

    def close(self) -> None:
        """Stop the heartbeat (marking this process's unfinished replies) and the storage threads."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.mcp is not None:  # stdio servers are child processes: stopped, not left behind
            self.mcp.close()
            self.mcp = None

    @classmethod
    def build(cls, config: AppConfig, registry: Registry, engine: Engine) -> Services:
        policy = TurnPolicy(
            first_token_timeout=config.first_token_timeout,
            idle_timeout=config.idle_timeout,
            coalesce_interval=config.coalesce_ms / 1000,
        )
        from chat.tools import ToolsModuleError, toolbox_from_env

        try:
            toolbox = toolbox_from_env()
        except ToolsModuleError as e:
            log.error("tools are off: %s", e)
            toolbox = None
        hub = None
        if toolbox is not None:  # [[mcp_servers]]: their tools join the toolbox as they connect
            from chat.tools.mcp_config import start_mcp_hub

            hub, problems = start_mcp_hub(registry.settings.models_file, os.environ)
            for problem in problems:
                log.error("MCP: %s", problem)
            if hub is not None:
                toolbox.sources.append(hub)
        return cls(config=config, registry=registry, engine=engine,
                   limiter=RateLimiter.from_config(config), policy=policy, toolbox=toolbox, mcp=hub)
