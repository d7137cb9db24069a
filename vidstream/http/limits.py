"""How long a request may wait on others: on Redis (one budget for all its commands) and on
its client (the gap between two pieces of its body)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from vidstream.http.errors import ApiError
from vidstream.state.budget import lift, redis_budget


def redis_budget_middleware(seconds: float) -> Middleware:
    """Every request's Redis commands, together, answer within `seconds` (REDIS_REQUEST_TIMEOUT_S)
    or fail as `unavailable` (the error middleware's 503), however many the request sends, until
    its answer starts (`lift_budget`)."""

    @web.middleware
    async def within_budget(request: web.Request, handler: Handler) -> web.StreamResponse:
        with redis_budget(seconds):
            return await handler(request)

    return within_budget


async def lift_budget(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: once an answer starts (an event stream's headers, say), an error
    can no longer become a 503, and a stream's later reads (catching a subscriber up) are not
    one request's to bound."""
    lift()


def body_timeout_middleware(seconds: float) -> Middleware:
    """A request whose body stops arriving for `seconds` (HTTP_BODY_TIMEOUT_S) ends with 408
    `request_timeout`. A body that keeps coming may take as long as it takes: uploads stream."""

    @web.middleware
    async def body_timeout(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.content.is_eof() or request.transport is None:
            return await handler(request)  # no body, or all of it is in already
        watch = BodyWatch(request, seconds)
        try:
            return await handler(request)
        finally:
            watch.stop()

    return body_timeout


class BodyWatch:
    """Looks at a request's body a few times per timeout: bytes came in since, or the gateway
    stopped reading (aiohttp pauses the socket while the handler has not taken what arrived:
    storage is slow, say), and the client is not stalling; otherwise, past the timeout, the
    handler's next read raises the 408."""

    def __init__(self, request: web.Request, seconds: float) -> None:
        self.content, self.transport, self.seconds = request.content, request.transport, seconds
        self.loop = asyncio.get_running_loop()
        self.seen, self.since = self.content.total_bytes, self.loop.time()
        self.period = seconds / 4
        self.timer: asyncio.TimerHandle | None = self.loop.call_later(self.period, self.check)

    def check(self) -> None:
        self.timer = None
        now = self.loop.time()
        if self.content.is_eof() or self.transport is None or self.transport.is_closing():
            return
        if self.content.total_bytes != self.seen or not self.transport.is_reading():
            self.seen, self.since = self.content.total_bytes, now
        elif now - self.since >= self.seconds:
            self.content.set_exception(ApiError(
                408, "request_timeout", f"No part of the body arrived for {self.seconds:g} s.",
            ))  # fmt: skip
            return
        self.timer = self.loop.call_later(self.period, self.check)

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
