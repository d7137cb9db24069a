"""Seeing what the gateway does: a request id on every request, one log line and metrics each.

`X-Request-Id` is taken from the client (or a proxy such as nginx's `$request_id`) when it looks
like an id, else made here; it is bound to every log line of the request, returned, and stored on
a job it creates, so one grep follows a job from its request through every role's logs.
"""

from __future__ import annotations

import re
import secrets
import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from vidstream.core import logs
from vidstream.ops.metrics import Metrics

REQUEST_ID = web.RequestKey("request_id", str)
JOB_ID = web.RequestKey("job_id", str)  # set by a handler that creates a job: logged with it
_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # anything else could forge log lines
log = logs.get(role="gateway")


def request_id(request: web.Request) -> str:
    rid: str = request.get(REQUEST_ID, "")
    return rid


def observe_middleware(metrics: Metrics) -> Middleware:
    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request.headers.get("X-Request-Id", "")
        if not _ID.fullmatch(rid):
            rid = secrets.token_hex(12)
        request[REQUEST_ID] = rid
        started = time.monotonic()
        status = 500
        try:
            with structlog.contextvars.bound_contextvars(request_id=rid):
                response = await handler(request)
            status = response.status
            response.headers["X-Request-Id"] = rid
            return response
        except web.HTTPException as exc:  # redirects pass through the error middleware
            status = exc.status
            exc.headers["X-Request-Id"] = rid
            raise
        finally:
            took = time.monotonic() - started
            resource = request.match_info.route.resource
            # The route's pattern, not the path: one time series per route, whatever the ids.
            route = resource.canonical if resource is not None else "unmatched"
            metrics.http_requests.labels(route, request.method, str(status)).inc()
            metrics.http_latency.labels(route, request.method).observe(took)
            # `job`, not `job_id`: a request line is the gateway's, not one of the job's own log
            # lines (`joblogs` ships those), or polling a job would fill its log.
            job = request.match_info.get("job_id") or request.get(JOB_ID)
            log.info("http_request", method=request.method, route=route, status=status,
                     took_ms=round(took * 1000, 1), request_id=rid, job=job)  # fmt: skip

    return observe
