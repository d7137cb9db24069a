"""Which connections a server takes: the client's address behind trusted proxies, caps on the
connections held in all and per client address, and a refusal the client gets to read.

Behind a reverse proxy every connection comes from the proxy, so per-address limits would count
every client together. `client_address` believes `X-Forwarded-For` only when the peer is one of
TRUSTED_PROXIES, and walks it from the right (the entries proxies appended) past every trusted
hop: the first untrusted one is the client as the outermost trusted proxy saw it. Entries left
of it were written by the client and are never believed. `Forwarded` is not read: a proxy that
sets only X-Forwarded-For (nginx, HAProxy, Caddy, Traefik, cloud load balancers) passes a
client's own `Forwarded` through untouched.

An IPv6 client is counted by its /64: one host is routinely given a whole /64, so per-address
caps on single IPv6 addresses would hold nobody back.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import resource
from collections import Counter
from collections.abc import Iterable
from enum import StrEnum
from http import HTTPStatus
from typing import cast

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Networks = tuple[IPNetwork, ...]
UNKNOWN = "?"  # a peer without an IP address (a Unix socket)
LINGER_S = 2.0  # how long a refused connection may take to read its answer and close


def networks(values: Iterable[str]) -> Networks:
    """TRUSTED_PROXIES's addresses and networks (`10.0.0.7`, `10.0.0.0/8`, `::1`); raises
    ValueError naming the first that is neither."""
    found: list[IPNetwork] = []
    for value in values:
        try:
            found.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or network") from None
    return tuple(found)


def parse_ip(text: str) -> IPAddress | None:
    """An address as a socket or a proxy writes it (`[::1]:443`, `10.0.0.1:80` and IPv4-mapped
    IPv6 included), or None for anything else (`unknown`, a name, garbage)."""
    text = text.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return ip


def trusted(ip: IPAddress | None, proxies: Networks) -> bool:
    return ip is not None and any(ip in net for net in proxies)


def client_address(peer: str | None, forwarded_for: Iterable[str], proxies: Networks) -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the first hop of
    `X-Forwarded-For` (every value of the header, in order) from the right that is not one."""
    ip = parse_ip(peer or "")
    if ip is None:
        return UNKNOWN
    if not trusted(ip, proxies):
        return str(ip)
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        left = parse_ip(hop)
        if left is None:  # a trusted proxy wrote no address: it is the last hop we know
            return str(ip)
        ip = left
        if not trusted(ip, proxies):
            return str(ip)
    return str(ip)  # trusted all the way: the leftmost hop is as far as anyone can tell


def bucket(address: str) -> str:
    """What per-address limits count `address` under: itself, or its /64 for IPv6."""
    ip = parse_ip(address)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return address


def connection_cap(configured: int) -> int:
    """MAX_CONNECTIONS, or with 0 a third of the process's open-file limit: the gateway and a
    notifier share one process in `vidstream dev`, and Redis connections, uploads being written
    and FFmpeg's pipes need descriptors too."""
    if configured:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(64, soft // 3)


class Refusal(StrEnum):
    """Why a connection was not taken."""

    FULL = "full"  # the server holds MAX_CONNECTIONS
    ADDRESS = "address"  # the client's address holds its cap


class Slot:
    """One connection held under an `Admission`, and the address it counts for, if any;
    `release()` is safe to call twice."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.address: str | None = None
        self.released = False

    def claim(self, address: str) -> Refusal | None:
        """Count this connection for `address` too (once); a refusal if it holds its cap."""
        if self.address is not None or self.released:
            return None
        key = bucket(address)
        held = self.admission.per_address
        if held[key] >= self.admission.address_cap:
            return Refusal.ADDRESS
        held[key] += 1
        self.address = key
        return None

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.admission.total -= 1
        if self.address is not None:
            held = self.admission.per_address
            held[self.address] -= 1
            if not held[self.address]:
                del held[self.address]


class Admission:
    """The connections one server holds, in all and per client address, against two caps."""

    def __init__(self, cap: int, address_cap: int, proxies: Networks) -> None:
        self.cap, self.address_cap, self.proxies = cap, address_cap, proxies
        self.total = 0
        self.per_address: Counter[str] = Counter()
        self.lingering = 0  # refused connections not yet closed
        # Refusals waiting to close hold descriptors too: an eighth of the cap at most, then a
        # flood of refusals is reset without an answer.
        self.max_lingering = max(16, cap // 8)

    def admit(self, peer: str | None) -> Slot | Refusal:
        """Take a new connection from `peer`, counted for its address unless it is a trusted
        proxy (whose clients are counted once their address is known)."""
        if self.total >= self.cap:
            return Refusal.FULL
        slot = Slot(self)
        self.total += 1
        ip = parse_ip(peer or "")
        if ip is not None and not trusted(ip, self.proxies):
            refused = slot.claim(str(ip))
            if refused is not None:
                slot.release()
                return refused
        return slot


class Refuser(asyncio.Protocol):
    """Answers a connection it will not serve, then closes it without losing the answer: the
    write side first (the client reads the answer, then its end of file), whatever the client
    still sends is read and dropped, and the socket closes once the client closes or after
    LINGER_S. Closing at once would drop the answer: the kernel resets a connection closed
    with unread data, and a client loses what it had not read yet."""

    def __init__(self, admission: Admission, response: bytes) -> None:
        self.admission, self.response = admission, response
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio's subclasses
        self.transport = transport
        if self.admission.lingering >= self.admission.max_lingering:
            transport.abort()  # a flood of refusals must not hold descriptors in turn
            return
        self.admission.lingering += 1
        self.counted = True
        transport.write(self.response)
        if transport.can_write_eof():
            transport.write_eof()
        self.timer = asyncio.get_running_loop().call_later(LINGER_S, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass  # the request this answers, or more of it: read so the close stays clean

    def eof_received(self) -> bool | None:
        return None  # the client is done: the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.counted:
            self.counted = False
            self.admission.lingering -= 1


def http_response(
    status: HTTPStatus, body: bytes, content_type: str, headers: dict[str, str] | None = None
) -> bytes:
    """A whole HTTP/1.1 response that closes its connection."""
    head = [f"HTTP/1.1 {status.value} {status.phrase}", f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}", "Connection: close"]  # fmt: skip
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def json_error(status: HTTPStatus, code: str, message: str, retry_after_s: int) -> bytes:
    """The API's error shape as a whole response, for answers written below aiohttp."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return http_response(status, body, "application/json", {"Retry-After": str(retry_after_s)})
