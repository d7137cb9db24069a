"""The notifier role: a `websockets` server at `/v1/ws` speaking the subscribe protocol.

    client → {"type": "subscribe", "job_id", "token", "last_event_id"?}
    server → {"type": "snapshot", "job": {...}, "last_event_id"}, then {"type": "event", ...}
    client → {"type": "unsubscribe", "job_id"}          server → {"type": "unsubscribed", ...}
    server → {"type": "error", "code", "message"} for anything it cannot do

A wrong token and an unknown job get the same answer, so a token never reveals a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from vidstream.core import logs
from vidstream.core.admission import Admission, Refusal, client_address, connection_cap
from vidstream.core.lifecycle import Component
from vidstream.core.tasks import cancel_and_wait
from vidstream.feed import access, resume
from vidstream.feed.base import FeedUnavailable
from vidstream.feed.redis import redis_hub
from vidstream.job.model import Job, is_job_id
from vidstream.notifier.guard import GuardedConnection
from vidstream.ops.metrics import CONTENT_TYPE
from vidstream.services import Services
from vidstream.state.bus import is_stream_id

PATH = "/v1/ws"
MAX_SUBSCRIPTIONS = 100
SLOW_BYTES = 1024 * 1024  # unsent bytes to a client that make it too slow: closed with 1013
SEND_BUFFER = 64 * 1024  # the kernel's send buffer per client
MAX_REFUSED = 10  # refused subscribes before a connection is closed (1008)
# How long a closing connection waits for the client's close frame before dropping the TCP
# connection: a slow reader closed with 1013 sees the frame only after reading its backlog.
CLOSE_TIMEOUT_S = 10.0


class Connection:
    """One client: its subscriptions, and messages written straight to its socket (no queue,
    no writer task: an idle connection costs what websockets' own does)."""

    def __init__(self, ws: ServerConnection, notifier: Notifier) -> None:
        self.ws = ws
        self.notifier = notifier
        self.closing = False
        self.refused = 0  # subscribes refused on this connection

    def send(self, text: str, event_id: str | None = None, name: str | None = None) -> None:
        if self.closing:
            return
        transport = self.ws.transport
        if transport is not None and transport.get_write_buffer_size() > SLOW_BYTES:
            # This far behind, the client is not reading: let it reconnect and resume from its
            # last event id rather than buffer without bound.
            self.close(1013, "client too slow")
            return
        broadcast([self.ws], text)
        self.notifier.services.metrics.ws_messages.inc()

    def close(self, code: int, reason: str) -> None:
        if not self.closing:
            self.closing = True
            self.notifier.hub.drop(self)
            self.notifier.own(asyncio.create_task(self.ws.close(code, reason)))

    def push(self, message: dict[str, Any]) -> None:
        self.send(json.dumps(message))

    def error(self, code: str, message: str, **extra: Any) -> None:
        self.push({"type": "error", "code": code, "message": message, **extra})

    async def receive(self, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            return self.error("invalid_message", "Messages must be JSON objects.")
        if not isinstance(msg, dict):
            return self.error("invalid_message", "Messages must be JSON objects.")
        kind = msg.get("type")
        if kind == "subscribe":
            try:
                return await self.subscribe(msg)
            except FeedUnavailable:
                return self.error("unavailable", "The job store is unavailable; try again shortly.")
        if kind == "unsubscribe":
            job_id = str(msg.get("job_id", ""))
            self.notifier.hub.unsubscribe(self, job_id)
            return self.push({"type": "unsubscribed", "job_id": job_id[:40]})
        if kind == "ping":
            return self.push({"type": "pong"})
        return self.error("invalid_message", "type must be subscribe, unsubscribe or ping.")

    async def subscribe(self, msg: dict[str, Any]) -> None:
        job_id, token, after = msg.get("job_id"), msg.get("token"), msg.get("last_event_id")
        hub = self.notifier.hub
        if not isinstance(job_id, str) or not isinstance(token, str):
            return self.error("invalid_message", "subscribe needs job_id and token strings.")
        if after is not None and (not isinstance(after, str) or not is_stream_id(after)):
            return self.error(
                "invalid_message", "last_event_id must be an event id such as '0-0'.",
                job_id=job_id[:40],
            )  # fmt: skip
        if not hub.subscribed(self, job_id) and hub.count(self) >= MAX_SUBSCRIPTIONS:
            return self.error(
                "too_many_subscriptions", f"At most {MAX_SUBSCRIPTIONS} jobs per connection."
            )
        job, last_id = await hub.feed.snapshot(job_id) if is_job_id(job_id) else (None, "")
        if job is None or not self.notifier.grants(token, job):
            # One answer for an unknown job and a wrong token: a token never reveals a job.
            # Guessing costs a connection after a few tries.
            self.refused += 1
            if self.refused > MAX_REFUSED:
                self.close(1008, "too many refusals")
            return self.error(
                "forbidden", "The token does not grant access to this job.", job_id=job_id[:40]
            )
        begin = await resume.start(hub.feed, job, last_id, after)
        kind = "reset" if begin.reset else "snapshot"
        self.send(resume.message(kind, await hub.present(job), begin.last_id))
        if job.status.terminal and begin.after == begin.last_id:
            return None  # finished, and the client has seen everything: nothing will follow
        await hub.subscribe(self, job_id, begin.after)
        return None


class Notifier(Component):
    """Serves `/v1/ws` on `host:port` (0 picks a free port; see `url`)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.hub = redis_hub(services)
        self.host, self.port = services.settings.notifier_host, services.settings.notifier_port
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        settings = services.settings
        cap = connection_cap(settings.max_connections)
        self.admission = Admission(cap, settings.ws_max_connections_per_ip, settings.proxies)
        # Browsers may connect from CORS_ORIGINS and from the gateway's own page.
        self.origins = set(services.settings.cors_origins)
        self.allow_origin(services.settings.gateway_url)
        self.log = logs.get(role="notifier")

    @property
    def url(self) -> str:
        if self.services.settings.public_ws_url:
            return self.services.settings.public_ws_url
        return self.services.settings.replace(notifier_port=self.port).ws_url

    def allow_origin(self, url: str) -> None:
        """Let browsers on the page at `url` (its scheme, host and port) connect."""
        parts = urlsplit(url)
        if parts.scheme and parts.netloc:
            self.origins.add(f"{parts.scheme}://{parts.netloc}")

    def grants(self, token: str, job: Job) -> bool:
        return access.grants(self.services, token, job)

    def own(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        if self._server is not None:
            return
        await self.hub.start()
        # `serve` names a connection class; this one needs the notifier's admission too.
        connection = functools.partial(GuardedConnection, self.admission)
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._admit,
            create_connection=cast(type[ServerConnection], connection),
            # The whole handshake, from the TCP accept: a client sending half a request head is
            # closed then (websockets' own default is 10 s too; set here, it is one setting).
            open_timeout=self.services.settings.http_header_timeout_s,
            max_size=64 * 1024,
            # Peers that do not answer a ping in time are dropped; compression is off: these
            # small JSON messages gain little from it, and it costs memory per connection.
            ping_interval=self.services.settings.ws_ping_interval_s,
            ping_timeout=self.services.settings.ws_ping_interval_s,
            close_timeout=CLOSE_TIMEOUT_S,
            compression=None,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        self.log.info("notifier_listening", url=self.url)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            # Going away (1001): clients reconnect to another notifier and resume by event id.
            server.close(close_connections=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await server.wait_closed()
        await cancel_and_wait(list(self._tasks))
        await self.hub.close()

    async def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """Before the handshake: the path, the browser's origin, and connections per address."""
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if path == "/metrics":
            services = self.services
            body = await services.metrics.exposition(services.redis, services.keys)
            headers = Headers({"Content-Type": CONTENT_TYPE, "Content-Length": str(len(body))})
            return Response(HTTPStatus.OK.value, "OK", headers, body)
        if path != PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, f"WebSocket endpoint is {PATH}\n")
        origin = request.headers.get("Origin")
        # Browsers always send Origin; other clients need none. A page on another site must not
        # ride on a user's network position.
        if origin is not None and origin not in self.origins:
            return connection.respond(HTTPStatus.FORBIDDEN, "This origin may not connect.\n")
        # Counted per address since it was accepted, unless it came through a trusted proxy:
        # then the client is known only now, from X-Forwarded-For.
        if isinstance(connection, GuardedConnection) and connection.slot is not None:
            peer = connection.remote_address
            forwarded = request.headers.get_all("X-Forwarded-For")
            client = client_address(str(peer[0]) if peer else None, forwarded,
                                    self.admission.proxies)  # fmt: skip
            if connection.slot.claim(client) is Refusal.ADDRESS:
                return connection.respond(
                    HTTPStatus.TOO_MANY_REQUESTS, "Too many connections from this address.\n"
                )
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        sock = ws.transport.get_extra_info("socket") if ws.transport else None
        if sock is not None:
            # A small kernel buffer per client (instead of megabytes of autotuning): a client
            # that stops reading shows up in our own write buffer soon, where SLOW_BYTES bounds
            # it, and an idle connection holds little memory.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self.services.metrics.ws_connections.inc()
        conn = Connection(ws, self)
        try:
            async for raw in ws:
                await conn.receive(raw)
        except ConnectionClosed:
            pass
        finally:
            self.services.metrics.ws_connections.dec()
            conn.closing = True
            self.hub.drop(conn)
