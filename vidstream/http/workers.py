"""`GET /v1/workers`: the live workers, what each runs and how it fared (operators only)."""

from __future__ import annotations

from aiohttp import web

from vidstream.http.auth import require_admin
from vidstream.http.state import SERVICES
from vidstream.ops.workers import list_workers

routes = web.RouteTableDef()


@routes.get("/v1/workers")
async def workers(request: web.Request) -> web.Response:
    require_admin(request)
    services = request.app[SERVICES]
    found = await list_workers(services.redis, services.keys)
    return web.json_response({"workers": [w.to_public() for w in found]})
