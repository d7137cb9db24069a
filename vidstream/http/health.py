"""`/healthz` (the process is up) and `/readyz` (Redis and storage answer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiohttp import web

from vidstream.core import logs
from vidstream.http.state import SERVICES
from vidstream.ops.metrics import CONTENT_TYPE

log = logs.get(role="gateway")
routes = web.RouteTableDef()
# Each check's bound, so /readyz answers within a second whatever hangs: a load balancer's probe
# gives up after a few seconds, and an answer that late reads as "down" without saying what.
READY_TIMEOUT_S = 0.8


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    timeout = READY_TIMEOUT_S

    async def check(name: str, probe: Awaitable[object]) -> tuple[str, str]:
        try:
            async with asyncio.timeout(timeout):
                await probe
        except Exception as exc:  # the cause goes to the log, not to whoever asks
            log.warning("not_ready", check=name, error=f"{type(exc).__name__}: {exc}"[:300])
            return name, "unavailable"
        return name, "ok"

    checks = dict(
        await asyncio.gather(
            check("redis", services.redis.ping()), check("storage", services.store.check())
        )
    )
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format: this process's numbers (every role's, in `vidstream dev`)."""
    services = request.app[SERVICES]
    body = await services.metrics.exposition(services.redis, services.keys)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
