"""`GET /v1/stats`: queues, throughput and durations per stage, jobs by status, dead letters
(operators only)."""

from __future__ import annotations

from aiohttp import web

from vidstream.http.auth import require_admin
from vidstream.http.state import SERVICES
from vidstream.ops import stats as numbers

routes = web.RouteTableDef()


@routes.get("/v1/stats")
async def stats(request: web.Request) -> web.Response:
    require_admin(request)
    services = request.app[SERVICES]
    return web.json_response(await numbers.read(services.redis, services.keys))
