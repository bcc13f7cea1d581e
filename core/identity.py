"""Who is asking: the owner key every handler passes to the store."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any, TypeAlias

# Matched with fullmatch: `$` would also accept a trailing newline, a second owner key for the same id.
_BROWSER_ID = re.compile(r"anon-[A-Za-z0-9_-]{22,64}")
_HF_OWNER = re.compile(r"hf:[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


def owner_for(request: Any, profile: Any = None, state_owner: str | None = None) -> str:
    """The owner of this call, most trusted source first.

    A login name (APP_USERS) or a Hugging Face profile always wins, so a logged-in user can
    never be steered to another owner. `state_owner` is the owner that `on_load` put in a
    server-side Gradio State: Gradio never takes a State's value from the client, and `on_load`
    accepts only well-formed random browser ids. Callers with none of these (gradio_client
    without a page load) get an owner per client session.
    """
    username = getattr(request, "username", None) if request is not None else None
    if username:
        return f"user:{username}"
    if profile is not None and getattr(profile, "username", None):
        return f"hf:{profile.username}"
    if state_owner and (_BROWSER_ID.fullmatch(state_owner) or _HF_OWNER.fullmatch(state_owner)):
        return state_owner
    session = getattr(request, "session_hash", None) or "unknown"
    return f"session:{session}"


def valid_browser_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_BROWSER_ID.fullmatch(value))


def display_name(owner: str) -> str:
    if owner.startswith(("user:", "hf:")):
        return owner.split(":", 1)[1]
    return "this browser"


# -- the client address, for rate limits on anonymous callers ------------------------------------

ProxyNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
_ANONYMOUS = ("anon-", "session:")


def is_anonymous(owner: str) -> bool:
    """An owner the caller can mint at will: a browser id or a gradio_client session."""
    return owner.startswith(_ANONYMOUS)


def parse_proxies(spec: str | None) -> tuple[ProxyNetwork, ...]:
    """TRUSTED_PROXIES: addresses or CIDRs, comma-separated. Raises ValueError naming the bad entry."""
    networks = []
    for part in (spec or "").replace(" ", ",").split(","):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as e:
            raise ValueError(f"TRUSTED_PROXIES: {part!r} is not an address or a CIDR (e.g. 10.0.0.0/8)") from e
    return tuple(networks)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip


def _key(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    # One IPv6 host usually holds a whole /64 and can rotate through it: the /64 is the unit.
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _forwarded_for(request: Any) -> list[str]:
    headers = getattr(request, "headers", None)
    if headers is None:
        return []
    getlist = getattr(headers, "getlist", None)
    values = getlist("x-forwarded-for") if callable(getlist) else [headers.get("x-forwarded-for") or ""]
    return [hop for value in values for hop in str(value).split(",") if hop.strip()]


def client_address(request: Any, trusted: Sequence[ProxyNetwork] = ()) -> str | None:
    """The caller's address for rate limits: the TCP peer, or, when the peer is one of the `trusted`
    proxies, the right-most X-Forwarded-For hop that is not a trusted proxy. None without a peer."""
    client = getattr(request, "client", None) if request is not None else None
    peer = _ip(str(getattr(client, "host", "") or ""))
    if peer is None:
        host = getattr(client, "host", None)
        return str(host)[:100] if host else None  # not an IP (a unix socket, a test client): as it is
    if not any(peer in net for net in trusted):
        return _key(peer)
    # Each proxy appends the address it saw, so hops are read right to left; anything left of the first
    # untrusted hop was written by the client itself and proves nothing.
    for hop in reversed(_forwarded_for(request)):
        ip = _ip(hop)
        if ip is None:
            break  # a garbled chain: charge the proxy that sent it, never a name the client chose
        if not any(ip in net for net in trusted):
            return _key(ip)
    return _key(peer)
