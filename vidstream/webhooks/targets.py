"""Where a webhook may go: public http(s) URLs only, never into vidstream's own network.

Checked twice. At job creation (`check_webhook_url`, pure): the URL's shape, and an IP-literal
host must be a global address. At each delivery (`resolve`): the host is resolved once, and
every address it resolves to must be global; the request then connects to exactly those
addresses (`post.py`), so a DNS answer that changes between the check and the connection
(rebinding) cannot aim it inward. WEBHOOK_ALLOW_PRIVATE turns the address checks off.
"""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from urllib.parse import urlsplit

from vidstream.core.errors import PermanentError, VidstreamError

MAX_URL_LENGTH = 2048
Address = IPv4Address | IPv6Address

_SHARED = IPv4Network("100.64.0.0/10")  # carrier-grade NAT: not global, yet not "private"
_NAT64 = IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix: traffic goes to the IPv4 inside
# IANA special-purpose ranges that are not globally reachable, yet Python 3.11's `is_global`
# (and every other `is_*`) lets through: refused by name, whatever the Python version says.
_SPECIAL: tuple[IPv4Network | IPv6Network, ...] = (
    IPv4Network("192.0.0.0/24"),  # IETF protocol assignments (RFC 6890), dummy 192.0.0.8
    IPv4Network("192.88.99.0/24"),  # deprecated 6to4 relay anycast (RFC 7526)
    IPv6Network("fec0::/10"),  # site-local, deprecated (RFC 3879): still routed inside some sites
    IPv6Network("3fff::/20"),  # documentation (RFC 9637)
    IPv6Network("64:ff9b:1::/48"),  # local-use IPv4/IPv6 translation (RFC 8215)
    IPv6Network("100:0:0:1::/64"),  # dummy prefix (RFC 9780)
    IPv6Network("5f00::/16"),  # segment routing SIDs (RFC 9602)
)
_LEGACY_V4 = re.compile(r"^[0-9a-fx.]+$")  # 127.1, 0x7f.0.0.1, 2130706433: inet_aton still parses
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class TargetRefused(VidstreamError):
    """The webhook target is, or resolves to, an address webhooks may not reach."""


def refusal(ip: Address) -> str | None:
    """Why a webhook may not connect to `ip` ("loopback", "private", ...), or None if it may."""
    if isinstance(ip, IPv6Address):
        # IPv6 forms that carry an IPv4 address reach that address: judge it instead.
        if (v4 := ip.ipv4_mapped) is not None or (v4 := _nat64(ip)) is not None:
            return _refusal(v4)
        for inner in _embedded(ip):
            if (reason := _refusal(inner)) is not None:
                return reason
    return _refusal(ip)


def _nat64(ip: IPv6Address) -> IPv4Address | None:
    return IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None


def _embedded(ip: IPv6Address) -> list[IPv4Address]:
    inner = [v4 for v4 in (ip.sixtofour, *(ip.teredo or ())) if v4 is not None]
    if int(ip) >> 32 == 0 and int(ip) > 1:  # IPv4-compatible ::a.b.c.d (deprecated)
        inner.append(IPv4Address(int(ip)))
    return inner


def _refusal(ip: Address) -> str | None:
    checks = (
        (ip.is_loopback, "loopback"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, IPv4Address) and ip in _SHARED, "shared"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (any(ip in net for net in _SPECIAL), "special-purpose"),
        (not ip.is_global, "non-global"),
    )
    return next((reason for refused, reason in checks if refused), None)


def literal_address(host: str) -> Address | None:
    """`host` as an IP address if it is one (legacy IPv4 forms included), else None."""
    try:
        return ip_address(host.strip("[]"))
    except ValueError:
        pass
    if _LEGACY_V4.match(host.lower()):
        try:
            return IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _invalid(message: str) -> PermanentError:
    return PermanentError(message, code="invalid_webhook_url")


def check_webhook_url(url: object, *, allow_private: bool = False) -> str:
    """`url` if a webhook may be sent there; else `PermanentError` (code `invalid_webhook_url`)
    saying why. Hostnames are only resolved at delivery, where they are checked again."""
    if not isinstance(url, str) or not url:
        raise _invalid("webhook_url must be an http or https URL")
    if len(url) > MAX_URL_LENGTH:
        raise _invalid(f"webhook_url must be at most {MAX_URL_LENGTH} characters")
    if _CONTROL.search(url):
        raise _invalid("webhook_url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a malformed port)
    except ValueError:
        # Not the ValueError's text: it quotes the client's port or host, at any length.
        raise _invalid("webhook_url is not a valid URL (its host or port is malformed)") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _invalid("webhook_url must be an http or https URL")
    if "@" in parts.netloc:
        raise _invalid("webhook_url must not carry a user name or password")
    if not parts.hostname:
        raise _invalid("webhook_url must name a host")
    ip = literal_address(parts.hostname)
    if ip is not None and not allow_private and (reason := refusal(ip)) is not None:
        raise _invalid(f"webhook_url points at a {reason} address; webhooks go to public hosts")
    return url


@dataclass(frozen=True, slots=True)
class Resolved:
    """One address a target host resolved to, checked."""

    host: str  # the address as text, with %scope for a scoped IPv6 one
    family: int
    port: int


async def resolve(host: str, port: int, *, allow_private: bool, timeout_s: float) -> list[Resolved]:
    """Resolve `host` once and check every address; `TargetRefused` if any may not be reached,
    `OSError` or `TimeoutError` if it does not resolve (worth trying again later)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        infos = await loop.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    found: list[Resolved] = []
    for family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0])
        ip = ip_address(text.partition("%")[0])
        if not allow_private and (reason := refusal(ip)) is not None:
            # One bad address refuses the host: the connection may go to any of them.
            raise TargetRefused(f"{host} resolves to {ip}, a {reason} address")
        if family == socket.AF_INET6 and len(sockaddr) > 3 and sockaddr[3] and "%" not in text:
            text = f"{text}%{sockaddr[3]}"
        resolved = Resolved(text, int(family), int(sockaddr[1]))
        if resolved not in found:
            found.append(resolved)
    if not found:
        raise OSError(f"{host} did not resolve to any address")
    return found
