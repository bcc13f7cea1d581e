"""Per-user rate limits with the `limits` library: in memory by default, Redis when REDIS_URL is set."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

log = logging.getLogger("parley.ratelimit")


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: float = 0.0  # seconds until the next request would be allowed

    @property
    def message(self) -> str:
        wait = max(1, math.ceil(self.retry_after))
        return f"You are sending messages too fast. Please wait {wait} s and try again."


class RateLimiter:
    """A moving-window limit per key (a user name or a browser id), shared by all processes via Redis."""

    def __init__(self, rate: str | None, redis_url: str | None = None, *, prefix: str = "parley"):
        self.item: RateLimitItem | None = parse(rate) if rate and rate.strip().lower() not in ("", "0", "none", "off") else None
        storage: Storage
        if redis_url:
            uri = redis_url if redis_url.startswith("async+") else "async+" + redis_url
            storage = RedisStorage(uri, implementation="redispy", key_prefix=prefix)
            self.backend = "redis"
        else:
            storage = MemoryStorage()
            self.backend = "memory"
        self.storage = storage
        self._limiter = MovingWindowRateLimiter(storage)

    @property
    def enabled(self) -> bool:
        return self.item is not None

    async def hit(self, key: str) -> Verdict:
        """Count one request for `key`; refuse it (and say how long to wait) when over the limit."""
        if self.item is None:
            return Verdict(True)
        if await self._limiter.hit(self.item, key):
            return Verdict(True)
        stats = await self._limiter.get_window_stats(self.item, key)
        return Verdict(False, max(stats.reset_time - time.time(), 0.0))

    async def reset(self) -> None:
        await self.storage.reset()
