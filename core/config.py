"""App-level settings read from the environment (the provider settings live in chat.registry)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.identity import ProxyNetwork, parse_proxies
from core.moderation import ModerationSettings
from core.ratelimit import parse_rate
from core.summaries import SummarySettings
from storage import db

MIB = 1024 * 1024

#: Said where the sidebar says chats are saved, and logged at start-up, when they will not outlive a restart.
EPHEMERAL_NOTICE = ("this Space has no persistent storage, so a restart of the Space deletes them. "
                    "The Space's owner can keep them by turning on persistent storage (Settings › Persistent storage, "
                    "mounted at /data) or by setting DATABASE_URL to a PostgreSQL database.")


def parse_users(spec: str | None) -> list[tuple[str, str]]:
    """APP_USERS: `alice:pw,bob:pw`, or the path of a file with one `name:password` a line."""
    if not spec or not spec.strip():
        return []
    spec = spec.strip()
    path = Path(spec)
    if ":" not in spec or (path.exists() and path.is_file()):
        if not path.is_file():
            raise ValueError(f"APP_USERS: no such file {spec!r} (expected name:password pairs or a file of them)")
        entries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    else:
        entries = [part.strip() for part in spec.split(",")]
    users: list[tuple[str, str]] = []
    for entry in entries:
        if not entry or entry.startswith("#"):
            continue
        name, sep, password = entry.partition(":")
        if not sep or not name.strip() or not password:
            raise ValueError("APP_USERS: each entry must be name:password")
        users.append((name.strip(), password))
    return users


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as e:
        raise ValueError(f"{name} must be a number, got {raw!r}") from e


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a positive number, got {env.get(name)!r}")
    return value


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, default)
    try:
        parse_rate(raw)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from e
    return raw


@dataclass(slots=True)
class AppConfig:
    users: list[tuple[str, str]] = field(default_factory=list)
    database_url: str | None = None
    redis_url: str | None = None
    rate_limit: str | None = "20/minute"
    #: Provider calls a period for the batch tab, a budget of its own (prompts × models per run).
    batch_rate_limit: str | None = "200/hour"
    #: TRUSTED_PROXIES as written: the proxies whose X-Forwarded-For is believed (addresses or CIDRs).
    trusted_proxies: tuple[str, ...] = ()
    rate_prefix: str = "parley"  # Redis key prefix: replicas of one deployment share it
    max_message_chars: int = 32_000
    first_token_timeout: float = 60.0
    idle_timeout: float = 60.0
    coalesce_ms: float = 50.0
    #: UI updates a second for all streams together: a stream's updates are spaced out to stay under it.
    updates_per_second: float = 200.0
    log_content: bool = False
    moderation: str | None = None
    #: How replies are checked: MODERATION_EVERY_CHARS, MODERATION_TIMEOUT (core.moderation).
    moderation_checks: ModerationSettings = field(default_factory=ModerationSettings)
    #: Long conversations: SUMMARIES, SUMMARY_AFTER_MESSAGES, SUMMARY_MODEL, SUMMARY_TIMEOUT (core.summaries).
    summaries: SummarySettings = field(default_factory=SummarySettings)
    shared_leaderboard: bool = False
    #: PARLEY_MCP=on (or `python app.py --mcp`): serve the MCP tools of ui/mcp.py at /gradio_api/mcp/.
    mcp_server: bool = False
    space_id: str | None = None
    browser_secret: str = ""
    max_upload_bytes: int = 5 * 1024 * 1024
    #: Files in chat messages (core/attachments.py): per file, per message (all files together), how many, PDF pages.
    max_file_mb: float = 20.0
    max_attachments_mb: float = 50.0
    max_files: int = 10
    max_pdf_pages: int = 100
    #: A conversation import (a JSON export, its attachments' bytes as base64 inside).
    max_import_mb: float = 100.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AppConfig:
        env = os.environ if env is None else env
        return cls(
            users=parse_users(env.get("APP_USERS")),
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            rate_limit=_rate(env, "RATE_LIMIT", "20/minute"),
            batch_rate_limit=_rate(env, "BATCH_RATE_LIMIT", "200/hour"),
            trusted_proxies=tuple(str(n) for n in parse_proxies(env.get("TRUSTED_PROXIES"))),
            rate_prefix=env.get("PARLEY_RATE_PREFIX") or "parley",
            max_message_chars=int(_float(env, "MAX_MESSAGE_CHARS", 32_000)),
            first_token_timeout=_float(env, "FIRST_TOKEN_TIMEOUT", 60.0),
            idle_timeout=_float(env, "IDLE_TIMEOUT", 60.0),
            coalesce_ms=_float(env, "STREAM_COALESCE_MS", 50.0),
            updates_per_second=max(_float(env, "STREAM_UPDATES_PER_SECOND", 200.0), 1.0),
            log_content=env.get("LOG_CONTENT", "").lower() in ("1", "true", "yes"),
            moderation=(env.get("MODERATION") or "").strip().lower() or None,
            moderation_checks=ModerationSettings.from_env(env),
            summaries=SummarySettings.from_env(env),
            shared_leaderboard=env.get("SHARED_LEADERBOARD", "").lower() in ("1", "true", "yes"),
            mcp_server=env.get("PARLEY_MCP", "").strip().lower() in ("on", "1", "true", "yes"),
            space_id=env.get("SPACE_ID") or None,
            # Encrypts the anonymous browser id in localStorage so it survives restarts. Gradio
            # sends it in /config, so it is obfuscation only; the id itself is the secret.
            browser_secret=env.get("BROWSER_STATE_SECRET") or "parley-browser-state",
            max_file_mb=_positive(env, "MAX_FILE_MB", 20.0),
            max_attachments_mb=_positive(env, "MAX_ATTACHMENTS_MB", 50.0),
            max_files=max(int(_positive(env, "MAX_FILES", 10)), 1),
            max_pdf_pages=max(int(_positive(env, "MAX_PDF_PAGES", 100)), 1),
            max_import_mb=_positive(env, "MAX_IMPORT_MB", 100.0),
        )

    @property
    def max_file_bytes(self) -> int:
        """MAX_FILE_MB in bytes (MiB: 20 is 20 × 1024 × 1024); also Gradio's `max_file_size` for uploads."""
        return int(self.max_file_mb * MIB)

    @property
    def max_attachments_bytes(self) -> int:
        """MAX_ATTACHMENTS_MB in bytes: all the files of one message together."""
        return int(self.max_attachments_mb * MIB)

    @property
    def max_import_bytes(self) -> int:
        """MAX_IMPORT_MB in bytes: the largest conversation import (its files' bytes are inside, as base64)."""
        return int(self.max_import_mb * MIB)


    @property
    def ephemeral_storage(self) -> bool:
        """On Spaces without DATABASE_URL or persistent storage at /data, the database is a file in the
        container (storage.db.default_url falls back to ./data): the next restart wipes every chat."""
        if not self.space_id or self.database_url:
            return False
        data = db.SPACES_DATA_DIR
        return not (data.is_dir() and os.access(data, os.W_OK))

    def trusted_proxy_networks(self) -> tuple[ProxyNetwork, ...]:
        return parse_proxies(",".join(self.trusted_proxies))

    def forwarded_allow_ips(self) -> str:
        """uvicorn's FORWARDED_ALLOW_IPS (it rewrites the client address before any handler sees it, and
        trusts loopback by default): the same proxies as ours, so that TRUSTED_PROXIES alone decides."""
        return ",".join(self.trusted_proxies)


def new_browser_id() -> str:
    """A random anonymous owner id: 128 bits, not guessable."""
    return "anon-" + secrets.token_urlsafe(16)
