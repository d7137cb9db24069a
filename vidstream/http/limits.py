"""How long a request may wait on others: on Redis (one budget for all its commands) and on
its client (the gap between two pieces of its body)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from vidstream.budget import redis_budget


def redis_budget_middleware(seconds: float) -> Middleware:
    """Every request's Redis commands, together, answer within `seconds` (REDIS_REQUEST_TIMEOUT_S)
    or fail as `unavailable` (the error middleware's 503), however many the request sends."""

    @web.middleware
    async def within_budget(request: web.Request, handler: Handler) -> web.StreamResponse:
        with redis_budget(seconds):
            return await handler(request)

    return within_budget
