"""Operator routes: `POST /v1/admin/pause/{role}`, `POST /v1/admin/resume/{role}` and
`GET /v1/admin/paused` (an admin key, or authentication off)."""

from __future__ import annotations

from aiohttp import web

from vidstream.core.errors import ConfigError
from vidstream.http.auth import require_admin
from vidstream.http.errors import ApiError
from vidstream.http.state import SERVICES
from vidstream.ops.pausing import paused_roles, set_paused

routes = web.RouteTableDef()


async def _set(request: web.Request, paused: bool) -> web.Response:
    require_admin(request)
    services = request.app[SERVICES]
    try:
        await set_paused(services.redis, services.keys, request.match_info["role"], paused)
    except ConfigError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    return web.json_response({"paused": await paused_roles(services.redis, services.keys)})


@routes.post("/v1/admin/pause/{role}")
async def pause(request: web.Request) -> web.Response:
    return await _set(request, True)


@routes.post("/v1/admin/resume/{role}")
async def resume(request: web.Request) -> web.Response:
    return await _set(request, False)


@routes.get("/v1/admin/paused")
async def paused(request: web.Request) -> web.Response:
    require_admin(request)
    services = request.app[SERVICES]
    return web.json_response({"paused": await paused_roles(services.redis, services.keys)})
