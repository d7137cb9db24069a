"""`GET /v1/dead-letters` and `POST /v1/jobs/{id}/retry`."""

from __future__ import annotations

from aiohttp import web

from vidstream.http.auth import job_or_404, tenant_of
from vidstream.http.errors import ApiError
from vidstream.http.jobs import job_body
from vidstream.http.state import SERVICES
from vidstream.ops.deadletters import ReplayRefused, list_dead, replay

routes = web.RouteTableDef()


@routes.get("/v1/dead-letters")
async def dead_letters(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise ApiError(400, "invalid_request", "limit must be a number from 1 to 1000")
    letters = await list_dead(request.app[SERVICES].jobs, limit, tenant_of(request))
    return web.json_response(
        {"dead_letters": [d.to_public(job.status.value if job else None) for d, job in letters]}
    )


@routes.post("/v1/jobs/{job_id}/retry")
async def retry_job(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    job = await job_or_404(request)  # the caller's own jobs only
    try:
        job, _ = await replay(services.jobs, job.id)
    except ReplayRefused as exc:
        if exc.status is None:
            raise ApiError(404, "not_found", "No such job.") from None
        raise ApiError(
            409, "conflict", f"The job is {exc.status}; only failed jobs can be retried."
        ) from None
    return web.json_response(await job_body(request, job), status=202)
