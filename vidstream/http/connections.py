"""The gateway's connections: how many it holds, from whom, and how long one may take to ask.

aiohttp holds a connection that sends half a request head for as long as it likes (19,790 of
them from one address once held 19,822 of the process's 20,000 descriptors), so a `Guard` stands
in front of its protocol on every connection: it counts the connection against MAX_CONNECTIONS
and GATEWAY_MAX_CONNECTIONS_PER_IP (refusing it with a JSON 503 or 429 it can read), and closes
it with a 408 when its first request head is not in within HTTP_HEADER_TIMEOUT_S. aiohttp's own
keep-alive timeout (HTTP_IDLE_TIMEOUT_S) bounds the wait for every later head, and
`http.limits` the gaps in a body.

Connections from TRUSTED_PROXIES are not counted per address: each carries many clients. The
proxy limits connections per client itself (deploy/nginx/vidstream.conf), and every request's
`remote` is the client's address from `X-Forwarded-For` (`client_middleware`), so per-address
limits further in (refused `?token=` guesses) count each client on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from http import HTTPStatus
from typing import cast

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from vidstream.core.admission import (
    Admission,
    Networks,
    Refusal,
    Refuser,
    Slot,
    client_address,
    json_error,
)

_REFUSALS = {
    Refusal.FULL: json_error(
        HTTPStatus.SERVICE_UNAVAILABLE, "too_many_connections",
        "The server holds all the connections it can; try again shortly.", 5,
    ),
    Refusal.ADDRESS: json_error(
        HTTPStatus.TOO_MANY_REQUESTS, "too_many_connections",
        "Too many connections from your address; close some and try again.", 5,
    ),
}  # fmt: skip
_HEAD_LATE = json_error(
    HTTPStatus.REQUEST_TIMEOUT, "request_timeout", "The request head took too long to arrive.", 1
)


class Guard(asyncio.Protocol):
    """One connection: admitted (then aiohttp's protocol serves it) or refused (a `Refuser`
    answers it), and closed if its first request head is late."""

    def __init__(self, site: GuardedSite) -> None:
        self.site = site
        self.inner: asyncio.Protocol | None = None
        self.slot: Slot | None = None
        self.transport: asyncio.Transport | None = None
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports (the roles run on uvloop) are
        # not subclasses of asyncio's, though they have every method used here.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        admitted = self.site.admission.admit(str(peer[0]) if peer else None)
        if isinstance(admitted, Refusal):
            self.inner = Refuser(self.site.admission, _REFUSALS[admitted])
        else:
            self.slot, self.inner = admitted, self.site.handler_factory()
            loop = asyncio.get_running_loop()
            self.head_timer = loop.call_later(self.site.header_timeout_s, self._head_late)
        self.inner.connection_made(transport)

    def head_received(self) -> None:
        """A request reached the application: the head came in time."""
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_late(self) -> None:
        self.head_timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_HEAD_LATE)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        assert self.inner is not None
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        assert self.inner is not None
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        assert self.inner is not None
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        assert self.inner is not None
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_received()  # cancels the timer
        if self.slot is not None:
            self.slot.release()
        if self.inner is not None:
            self.inner.connection_lost(exc)


class GuardedSite(web.BaseSite):
    """aiohttp's TCP site with a `Guard` on each connection."""

    __slots__ = ("admission", "handler_factory", "header_timeout_s", "host", "port")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, admission: Admission,
        header_timeout_s: float,
    ) -> None:  # fmt: skip
        super().__init__(runner)
        assert runner.server is not None
        self.handler_factory: Callable[[], asyncio.Protocol] = runner.server
        self.host, self.port = host, port
        self.admission, self.header_timeout_s = admission, header_timeout_s

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Guard(self), self.host, self.port)


def client_middleware(proxies: Networks) -> Middleware:
    """Give every request its client's `remote` (from `X-Forwarded-For` when the peer is a
    trusted proxy), and tell the connection's `Guard` that a request head came in."""

    @web.middleware
    async def client(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        guard = transport.get_protocol() if transport is not None else None
        if isinstance(guard, Guard):
            guard.head_received()
        if proxies:
            forwarded = request.headers.getall("X-Forwarded-For", [])
            request = request.clone(remote=client_address(request.remote, forwarded, proxies))
        return await handler(request)

    return client
