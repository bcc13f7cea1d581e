"""The current date and time in an IANA time zone."""

from __future__ import annotations

import difflib
import functools
import re
import zoneinfo
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from chat.tools.base import Tool, ToolContext, ToolError

# Zone keys are path-like ("America/Argentina/Buenos_Aires", "Etc/GMT+5"); anything else is refused before lookup.
_ZONE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+){0,3}$")


@functools.lru_cache(maxsize=1)
def _zones() -> tuple[str, ...]:
    zones = zoneinfo.available_timezones()
    return tuple(sorted(z for z in zones if "/" in z and not z.startswith(("posix/", "right/"))))


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The ZoneInfo for an IANA name; ToolError (with close matches) when the zone is unknown."""
    name = name.strip()
    if name.upper() in ("UTC", "Z", "GMT"):
        return zoneinfo.ZoneInfo("UTC")
    if len(name) <= 64 and _ZONE.match(name):
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            pass
    shown = name if len(name) <= 64 else name[:61] + "..."
    matches = difflib.get_close_matches(name, _zones(), n=3, cutoff=0.6) if len(name) <= 64 else []
    hint = f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""
    raise ToolError(
        f"Unknown time zone {shown!r}.{hint} Use an IANA name such as 'Europe/London', 'America/New_York' or 'UTC'."
    )


class ClockArgs(BaseModel):
    timezone: str = Field(
        default="UTC",
        max_length=64,
        description="IANA time zone name, e.g. 'Europe/Paris', 'America/New_York', 'Asia/Tokyo' or 'UTC'.",
    )


def _current_time(args: ClockArgs, ctx: ToolContext) -> dict[str, str]:
    tz = zone(args.timezone)
    now = (ctx.now() if ctx.now is not None else datetime.now(UTC)).astimezone(tz)
    offset = now.strftime("%z")
    return {
        "timezone": str(tz.key),
        "datetime": now.isoformat(timespec="seconds"),
        "date": now.date().isoformat(),
        "time": now.strftime("%H:%M:%S"),
        "weekday": now.strftime("%A"),
        "utc_offset": f"{offset[:3]}:{offset[3:]}" if offset else "+00:00",
        "abbreviation": now.tzname() or "",
    }


current_time = Tool.from_function(
    _current_time,
    name="current_time",
    description="The current date, time and weekday in a time zone. Use it whenever the answer depends on "
    "today's date or the time.",
    timeout=5.0,
)
