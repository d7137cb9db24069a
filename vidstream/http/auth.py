"""Who is calling: the API key on every `/v1` route (but signed object links and the API
documents), its tenant, and a rate limit per key.

A key that is missing or unknown gets 401; a key over its rate gets 429 with `Retry-After`. An
event stream opened with `?token=` has no key to count against: its refusals are counted per
client address instead, with the same rate, so tokens cannot be guessed at speed. With
`VIDSTREAM_AUTH=off` every caller is the tenant `default`.
"""

from __future__ import annotations

import math
import re

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from vidstream.core.admission import bucket as address_bucket
from vidstream.core.auth import ApiKey, KeyRing
from vidstream.http.bodies import short
from vidstream.http.errors import ApiError
from vidstream.http.state import SERVICES
from vidstream.job.model import Job, is_job_id
from vidstream.services import Services
from vidstream.state import scripts

DEFAULT_TENANT = "default"
# Signed, or public documents.
_OPEN = ("/v1/objects/", "/v1/openapi.json", "/v1/schemas/", "/v1/kinds", "/v1/models")
# The one route a `?token=` opens instead of a key (not `/v1/templates/events`, say).
_EVENTS = re.compile(r"/v1/jobs/[^/]+/events")


TENANT = web.RequestKey("tenant", str)
API_KEY = web.RequestKey("api_key", ApiKey)


def tenant_of(request: web.Request) -> str:
    """The tenant the request acts for (set by the middleware)."""
    tenant: str = request.get(TENANT, DEFAULT_TENANT)
    return tenant


def key_of(request: web.Request) -> ApiKey | None:
    """The API key the request came with (None with authentication off)."""
    return request.get(API_KEY)


def needs_key(path: str) -> bool:
    return path.startswith("/v1/") and not path.startswith(_OPEN)


def bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def auth_middleware(services: Services, ring: KeyRing | None) -> Middleware:
    """`ring` None: authentication is off (every caller is the default tenant)."""
    settings = services.settings
    limiter = scripts.register(services.redis, "rate_limit")

    async def wait_ms(bucket: str, *, peek: bool = False) -> int:
        """How long the bucket's owner must wait (0: go on); counts this request unless `peek`."""
        if not settings.rate_limit_per_min:
            return 0
        interval = 60_000 / settings.rate_limit_per_min
        args: list[str | float] = [interval, interval * settings.rate_limit_per_min]
        if peek:
            args.append("peek")
        return int(await limiter(keys=[services.keys.rate(bucket)], args=args))

    async def token_stream(request: web.Request, handler: Handler) -> web.StreamResponse:
        """An event stream from EventSource, which cannot send headers: its handler checks the
        token (the job's ws_token, or a key) against the job (`http.sse`). Refusals count per
        client address (behind TRUSTED_PROXIES, the one `X-Forwarded-For` names)."""
        bucket = f"addr:{address_bucket(request.remote or '?')}"
        if waited := await wait_ms(bucket, peek=True):
            raise _rate_limited(waited)
        try:
            return await handler(request)
        except ApiError as exc:
            if exc.status == 404:
                await wait_ms(bucket)
            raise

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" or not needs_key(request.path):
            return await handler(request)
        if "token" in request.query and _EVENTS.fullmatch(request.path):
            return await token_stream(request, handler)
        if ring is None:
            request[TENANT] = DEFAULT_TENANT
            return await handler(request)
        record = ring.find(bearer(request.headers.get("Authorization", "")))
        if record is None:
            raise ApiError(
                401, "unauthorized", "Send a valid API key as 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": 'Bearer realm="vidstream"'},
            )  # fmt: skip
        request[TENANT], request[API_KEY] = record.tenant, record
        if waited := await wait_ms(record.id):
            raise _rate_limited(waited)
        return await handler(request)

    return authenticate


def _rate_limited(wait_ms: int) -> ApiError:
    retry_after = str(max(1, math.ceil(wait_ms / 1000)))
    return ApiError(
        429, "rate_limited", f"Too many requests; try again in {retry_after} s.",
        headers={"Retry-After": retry_after},
    )  # fmt: skip


def require_admin(request: web.Request) -> None:
    """Operator routes (workers, stats, pause): an admin key, or authentication off. Anyone
    else gets 404, as for a route that does not exist for them."""
    services = request.app[SERVICES]
    if services.api_keys is None:
        return
    key = key_of(request)
    if key is None or not key.admin:
        raise ApiError(404, "not_found", "No such route.")


async def job_or_404(request: web.Request, job_id: str | None = None) -> Job:
    """The job the path names, if it belongs to the caller's tenant; else 404."""
    job_id = request.match_info["job_id"] if job_id is None else job_id
    job = await request.app[SERVICES].jobs.get(job_id) if is_job_id(job_id) else None
    if job is None or job.tenant != tenant_of(request):
        raise ApiError(404, "not_found", f"No job with id {short(job_id, 30)}.")
    return job
