"""Rate limits on what costs money: provider calls, per user, and per client address for anonymous callers.

The one rule, used by chat, compare and batch alike: `await limiter.charge(identity, calls=n)` counts
`n` provider calls at once or refuses them all. A logged-in owner (APP_USERS, Hugging Face) is limited
per user. An anonymous owner (a browser id, a gradio_client session) can mint a fresh owner at will, so
it is refused when EITHER its owner key OR its client address is over the limit. Batch runs draw on a
budget of their own. Moving windows in the `limits` library: in memory, or in Redis when REDIS_URL is set
(shared by every replica).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from core.identity import ProxyNetwork, client_address, is_anonymous

log = logging.getLogger("parley.ratelimit")

Budget = Literal["calls", "batch"]
_OFF = ("", "0", "none", "off")


def parse_rate(rate: str | None) -> RateLimitItem | None:
    """`20/minute` as a limit; None when off. Raises ValueError with the accepted forms."""
    if rate is None or rate.strip().lower() in _OFF:
        return None
    try:
        return parse(rate.strip())
    except ValueError as e:
        raise ValueError(f"{rate!r} is not a rate: write it as calls/period, e.g. 20/minute or 200/hour, or off") from e


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is charged: the owner key and, for an anonymous owner, the client address."""

    owner: str
    address: str | None = None

    @property
    def anonymous(self) -> bool:
        return is_anonymous(self.owner)

    def keys(self) -> list[str]:
        """The windows a charge must fit in; all of them are charged."""
        keys = [f"owner:{self.owner}"]
        if self.anonymous:
            # No address (not a web request): one shared window, so that minting owners never helps.
            keys.append(f"addr:{self.address or 'unknown'}")
        return keys


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: float = 0.0  # seconds until the oldest call in the full window expires
    calls: int = 1
    remaining: int | None = None  # calls left in the fullest window when refused
    limit: str = ""  # the limit, e.g. "20 per 1 minute"
    #: True when `calls` is more than the whole limit: waiting never helps.
    never: bool = False

    @property
    def wait(self) -> int:
        return max(1, math.ceil(self.retry_after))

    @property
    def wait_text(self) -> str:
        """How long to wait, in words: seconds, or minutes once it is over two."""
        return f"{self.wait} s" if self.wait < 120 else f"{math.ceil(self.wait / 60)} min"

    @property
    def message(self) -> str:
        if self.calls <= 1:
            return f"You are sending messages too fast. Please wait {self.wait} s and try again."
        if self.never:
            return (f"This needs {self.calls} provider calls, more than the rate limit allows at once "
                    f"({self.limit}). Nothing was sent.")
        return (f"This needs {self.calls} provider calls and {self.remaining} are left under the rate limit "
                f"({self.limit}). Nothing was sent: wait about {self.wait_text} and try again.")


class RateLimiter:
    """Moving-window budgets of provider calls, keyed by `Identity.keys()`, shared by all processes via Redis."""

    def __init__(self, rate: str | None, redis_url: str | None = None, *, prefix: str = "parley",
                 batch_rate: str | None = None, trusted_proxies: Sequence[ProxyNetwork] = ()):
        self.item = parse_rate(rate)
        self.batch_item = parse_rate(batch_rate)
        self.trusted_proxies = tuple(trusted_proxies)
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

    @classmethod
    def from_config(cls, config: Any) -> RateLimiter:
        """Built from core.config.AppConfig (RATE_LIMIT, BATCH_RATE_LIMIT, TRUSTED_PROXIES, REDIS_URL)."""
        return cls(config.rate_limit, config.redis_url, prefix=config.rate_prefix,
                   batch_rate=config.batch_rate_limit, trusted_proxies=config.trusted_proxy_networks())

    @property
    def enabled(self) -> bool:
        return self.item is not None

    def identity(self, request: Any, owner: str) -> Identity:
        """The identity to charge for a request by `owner` (the address only matters when anonymous)."""
        if not is_anonymous(owner):
            return Identity(owner)  # an office behind one address must not share one user's budget
        return Identity(owner, client_address(request, self.trusted_proxies))

    async def charge(self, identity: Identity, calls: int = 1, *, budget: Budget = "calls") -> Verdict:
        """Count `calls` provider calls against every window of `identity`, or refuse them all."""
        item = self.batch_item if budget == "batch" else self.item
        if item is None:
            return Verdict(True, calls=calls)
        calls = max(int(calls), 1)
        keys = [f"{budget}/{k}" for k in identity.keys()]
        if calls > item.amount:
            return Verdict(False, calls=calls, remaining=await self._remaining(item, keys), limit=str(item), never=True)
        for key in keys:
            if not await self._limiter.test(item, key, cost=calls):
                return await self._refuse(item, key, keys, calls)
        for key in keys:
            # Each hit is atomic; only a request racing between test and hit can fail here. It is then
            # refused although earlier windows were charged: erring towards fewer calls, never more.
            if not await self._limiter.hit(item, key, cost=calls):
                return await self._refuse(item, key, keys, calls)
        return Verdict(True, calls=calls)

    async def hit(self, key: str) -> Verdict:
        """One call for an owner key with no request at hand (an anonymous key shares the no-address window)."""
        return await self.charge(Identity(key))

    async def _remaining(self, item: RateLimitItem, keys: list[str]) -> int:
        stats = [await self._limiter.get_window_stats(item, k) for k in keys]
        return max(min(s.remaining for s in stats), 0)

    async def _refuse(self, item: RateLimitItem, full: str, keys: list[str], calls: int) -> Verdict:
        stats = await self._limiter.get_window_stats(item, full)
        return Verdict(False, max(stats.reset_time - time.time(), 0.0), calls=calls,
                       remaining=await self._remaining(item, keys), limit=str(item))

    async def reset(self) -> None:
        await self.storage.reset()
