"""The notifier's front door: every TCP connection counted from the moment it is accepted, and
refused with an answer past MAX_CONNECTIONS or its address's WS_MAX_CONNECTIONS_PER_IP."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection
from websockets.server import ServerProtocol

from vidstream.core.admission import Admission, Refusal, Refuser, Slot, http_response

_REFUSALS = {
    Refusal.FULL: http_response(
        HTTPStatus.SERVICE_UNAVAILABLE, b"The server holds all the connections it can.\n",
        "text/plain; charset=utf-8", {"Retry-After": "5"},
    ),
    Refusal.ADDRESS: http_response(
        HTTPStatus.TOO_MANY_REQUESTS, b"Too many connections from this address.\n",
        "text/plain; charset=utf-8", {"Retry-After": "5"},
    ),
}  # fmt: skip


class GuardedConnection(ServerConnection):
    """websockets' connection, counted from the moment the TCP connection is accepted: one that
    never finishes its handshake holds a descriptor too (for up to HTTP_HEADER_TIMEOUT_S). Past
    MAX_CONNECTIONS, or WS_MAX_CONNECTIONS_PER_IP for its address, it is answered (503, 429)
    and closed before websockets sees it."""

    def __init__(self, admission: Admission, protocol: ServerProtocol, server: Server,
                 **options: Any) -> None:  # fmt: skip
        super().__init__(protocol, server, **options)
        self.admission = admission
        self.slot: Slot | None = None
        self.refuser: Refuser | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        admitted = self.admission.admit(str(peer[0]) if peer else None)
        if isinstance(admitted, Refusal):
            self.refuser = Refuser(self.admission, _REFUSALS[admitted])
            self.refuser.connection_made(transport)
            return
        self.slot = admitted
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.refuser is not None:
            self.refuser.data_received(data)
        else:
            super().data_received(data)

    def eof_received(self) -> None:
        if self.refuser is not None:
            self.refuser.eof_received()  # None: the transport closes
        else:
            super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refuser is not None:
            self.refuser.connection_lost(exc)
            return
        if self.slot is not None:
            self.slot.release()
        super().connection_lost(exc)
