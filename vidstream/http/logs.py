"""`GET /v1/jobs/{id}/logs`: the log lines every role wrote about a job (`ops.joblogs`)."""

from __future__ import annotations

from aiohttp import web

from vidstream.http.auth import job_or_404
from vidstream.http.errors import ApiError
from vidstream.http.state import SERVICES
from vidstream.ops import joblogs
from vidstream.state import bus

routes = web.RouteTableDef()

DEFAULT_LIMIT, MAX_LIMIT = 200, 1000
_LAST_ID = (2**64 - 1, 2**64 - 1)  # nothing can come after it (and Redis refuses "(" + it)


@routes.get("/v1/jobs/{job_id}/logs")
async def job_logs(request: web.Request) -> web.Response:
    """The job's lines after `?after=` (a line id), oldest first, `?limit=` at a time; `next`
    is the id to pass as `after` for the following page, null once this one reached the end."""
    job = await job_or_404(request)
    after = request.query.get("after", "0-0")
    try:
        limit = int(request.query.get("limit", str(DEFAULT_LIMIT)))
    except ValueError:
        limit = 0
    if not bus.is_stream_id(after) or not 1 <= limit <= MAX_LIMIT:
        raise ApiError(
            400, "invalid_request", f"after must be a line id such as '0-0'; limit is 1-{MAX_LIMIT}"
        )
    services = request.app[SERVICES]
    entries = []
    if bus.stream_id(after) != _LAST_ID:
        key = services.keys.job_logs(job.id)
        entries = await bus.history(services.redis, key, after, count=limit)
    lines = [joblogs.present(entry_id, fields) for entry_id, fields in entries]
    cursor = lines[-1]["id"] if len(lines) == limit else None
    return web.json_response({"job_id": job.id, "logs": lines, "next": cursor})
