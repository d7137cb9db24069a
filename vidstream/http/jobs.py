"""`/v1/jobs`: create (JSON or multipart upload), read, list events, cancel.

Every job belongs to the tenant of the key that created it; to any other tenant it does not
exist (404, never 403).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from vidstream import kinds
from vidstream.core.errors import PermanentError
from vidstream.core.tasks import kept_alive
from vidstream.http import sse
from vidstream.http.auth import job_or_404, tenant_of
from vidstream.http.bodies import Form, parts, read_json, short, text_field, validated
from vidstream.http.errors import ApiError
from vidstream.http.idempotency import IdempotencyKey
from vidstream.http.observe import JOB_ID, request_id
from vidstream.http.state import SERVICES, URLS, base_url
from vidstream.job.kinds import DEFAULT, KINDS
from vidstream.job.model import Job, Kind, Priority, Stage, Status, new_job_id, parse_kind
from vidstream.job.present import present_job
from vidstream.job.protocol import Cancel, Intake
from vidstream.kinds.base import Draft, Incoming, Upload
from vidstream.services import Services
from vidstream.state import bus
from vidstream.state.budget import cleanup
from vidstream.state.bus import is_stream_id
from vidstream.state.jobstore import Binding
from vidstream.state.tickets import Ticket, Tickets
from vidstream.storage.names import new_upload_key, safe_filename
from vidstream.webhooks.targets import check_webhook_url

routes = web.RouteTableDef()

# The fields a multipart request may have besides its file: those of every kind made from one
# video, as text.
_FORM_FIELDS = frozenset({"kind"}).union(
    *(set(spec.request.model_fields) - {"source"} for spec in KINDS.values() if spec.from_video)
)
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
QUEUE_CHECK_S = 1.0  # how stale the queue depth behind `overloaded` may be
# An upload streamed with its job (multipart) is abandoned this long after its stream stopped
# without a job taking it; kept alive meanwhile.
UPLOAD_TICKET_S = 300


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A job as the client asked for it, validated, and as its kind's intake made it."""

    id: str
    kind: Kind
    draft: Draft
    webhook_url: str
    priority: Priority = Priority.NORMAL

    def job(self, tenant: str) -> Job:
        d = self.draft
        job = Job.new(d.source_key, d.options, tenant, self.kind, self.webhook_url,
                      d.source_name)  # fmt: skip
        return job.with_changes(
            id=self.id, priority=self.priority, timeline=d.timeline, assets=d.assets
        )


@routes.post("/v1/jobs")
async def create_job(request: web.Request) -> web.Response:
    services, tenant = request.app[SERVICES], tenant_of(request)
    multipart = request.content_type == "multipart/form-data"
    if not multipart and request.content_type not in ("application/json", ""):
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send application/json, or multipart/form-data with a 'file' field.",
        )
    await _check_load(request)
    if multipart:  # before the upload streams in; a JSON job learns it as it is created
        await _refuse_if_paused(services)
    idem = None
    if header := request.headers.get("Idempotency-Key"):
        # An upload's bytes are unknown before they are read, so a multipart request is
        # recognised by its key alone; a JSON request also by its body.
        fingerprint = "multipart" if multipart else hashlib.sha256(await request.read()).hexdigest()
        idem = IdempotencyKey(services.redis, services.keys, tenant, header, fingerprint)
        if existing := await idem.reserve():
            job = await services.jobs.get(existing)
            if job is not None and job.tenant == tenant:
                await services.jobs.confirm()  # a first try's 503 may have been not replicated
                return web.json_response(await job_body(request, job), status=200)
    # The reservation is kept alive for as long as the upload streams, and bound to the job by
    # the step that creates it.
    async with idem.held() if idem is not None else contextlib.nullcontext():
        spec = await (_receive_upload(request) if multipart else _json_job(request, tenant))
        job = spec.job(tenant).with_changes(request_id=request_id(request))
        try:
            job = await _create(services, job, spec.draft.found, idem.binding if idem else None)
        except BaseException:
            if spec.draft.assets:  # uploads the intake took: free again, unless the job was made
                await asyncio.shield(cleanup(_give_back(services, job.id, spec.draft.assets)))
            raise
    services.metrics.jobs_created.labels(job.kind.value).inc()
    request[JOB_ID] = job.id  # the request's log line names the job it made
    body = await job_body(request, job)
    return web.json_response(body, status=202, headers={"Location": body["links"]["self"]})


async def _refuse_if_paused(services: Services) -> None:
    if await services.redis.exists(services.keys.paused("gateway")):
        raise _paused()


def _paused() -> ApiError:
    return ApiError(
        503, "paused", "New jobs are paused for maintenance; try again shortly.",
        headers={"Retry-After": "60"},
    )  # fmt: skip


async def _create(services: Services, job: Job, found: Intake | None, bind: Binding | None) -> Job:
    """Store the job (binding the request's Idempotency-Key to it). One from an upload
    (`found`: what the storage check saw) takes the upload's ticket in the same step, after the
    pause flag: one round trip for the whole job."""
    if found is None:
        if await services.jobs.create(job, bind) is Intake.KEY_TAKEN:
            raise _key_taken()
        return job
    key, paused = job.source_key, services.keys.paused("gateway")
    outcome, filename = await services.jobs.create_from_upload(job, key, found, paused, bind)
    match outcome:
        case Intake.OK:
            return job.with_changes(source_name=filename)
        case Intake.KEY_TAKEN:
            raise _key_taken()
        case Intake.PAUSED:
            raise _paused()
        case Intake.MISSING:
            raise ApiError(400, "source_not_found", "Nothing was uploaded to that key yet.")
        case Intake.TOO_LARGE:
            limit = services.settings.max_upload_bytes
            raise ApiError(413, "too_large", f"The source is larger than {limit} bytes.")
    # A key is usable once, and only by the tenant that was given it; to anyone else it is as
    # unknown as a key that was never handed out.
    raise ApiError(400, "source_not_found", f"No upload of yours exists at {short(key, 80)}.")


async def _give_back(services: Services, job_id: str, keys: tuple[str, ...]) -> None:
    """The job `job_id` was not made after all: the uploads it took are free again (and
    abandoned unless another job takes them). Nothing is given back from a job that exists:
    the step that made it may have answered too late."""
    if await services.jobs.get(job_id) is None:
        await Tickets(services.redis, services.keys).give_back_all(keys, job_id)


def _key_taken() -> ApiError:
    # This request's reservation lapsed (Redis stalled for longer than it lasts) and another
    # request with the key reserved it or made its job meanwhile: this one makes nothing.
    return ApiError(
        409, "conflict",
        "Another request with this Idempotency-Key is in progress or made its job; send it again.",
    )  # fmt: skip


async def job_body(request: web.Request, job: Job) -> dict[str, Any]:
    """The job object, with a token to watch it over the WebSocket and links."""
    services = request.app[SERVICES]
    body = await present_job(job, services.store, services.settings.download_url_ttl_s)
    body["ws_token"] = services.signer.ws_token(
        job.tenant, job.id, job.created_at, services.settings.ws_token_ttl_s
    )
    body["links"] = {
        "self": f"{base_url(request)}/v1/jobs/{job.id}",
        "events": f"{base_url(request)}/v1/jobs/{job.id}/events",
        "ws": request.app[URLS].ws,
    }
    return body


def _webhook(value: object, services: Services) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise ApiError(400, "invalid_webhook_url", "webhook_url must be an http(s) URL")
    return check_webhook_url(value, allow_private=services.settings.webhook_allow_private)


async def _json_job(request: web.Request, tenant: str) -> JobRequest:
    body = await read_json(request)
    return await _intake(request, tenant, parse_kind(body.pop("kind", DEFAULT)), body)


async def _intake(
    request: web.Request, tenant: str, kind: Kind, body: dict[str, Any],
    upload: Upload | None = None,
) -> JobRequest:  # fmt: skip
    """The request checked against its kind's model, then taken in by the kind's own intake."""
    services = request.app[SERVICES]
    checked = validated(KINDS[kind].request, body, f"a {kind} job")
    webhook_url = _webhook(checked.webhook_url, services)
    job_id = new_job_id()
    refuse = functools.partial(_refuse_if_paused, services)
    incoming = Incoming(services, tenant, job_id, refuse, upload)
    draft = await kinds.handler(kind).intake(incoming, checked)
    return JobRequest(job_id, kind, draft, webhook_url, checked.priority)


async def _receive_upload(request: web.Request) -> JobRequest:
    """Stream the `file` part to storage as it arrives; collect the job's fields around it.

    The upload gets a ticket before its first byte, as one from `POST /v1/uploads` does: it is
    owned from the start, taken by the job in the step that creates it, and deleted by
    retention if no job ever does (the job could not be created: Redis went away, the gateway
    died). The ticket is kept alive while the bytes stream in, and lapses soon after."""
    services = request.app[SERVICES]
    tickets = Tickets(services.redis, services.keys)
    form = Form()
    key: str | None = None
    filename = ""
    try:
        async for part in parts(request, form):
            if part.name == "file":
                if key is not None:
                    raise ApiError(400, "invalid_request", "send one 'file' part per job")
                key, filename = new_upload_key(), safe_filename(part.filename or "upload")
                ticket = Ticket(key, tenant_of(request), filename, 0, "application/octet-stream")
                await tickets.issue(ticket, UPLOAD_TICKET_S, margin_s=0)
                extend = functools.partial(tickets.extend, key, UPLOAD_TICKET_S)
                async with kept_alive(extend, UPLOAD_TICKET_S / 3, "upload-ticket"):
                    await services.store.put_stream(
                        key, _chunks(part), "application/octet-stream",
                        services.settings.max_upload_bytes,
                    )  # fmt: skip
            elif part.name in _FORM_FIELDS:
                form.add(part.name, await text_field(part, form))
            else:
                raise ApiError(400, "invalid_request", f"unknown form field {short(part.name)}")
        if key is None:
            raise ApiError(400, "missing_file", "The form has no 'file' field with the video.")
        fields: dict[str, Any] = dict(form.fields)
        kind = parse_kind(fields.pop("kind", DEFAULT))
        spec = KINDS[kind]
        if not spec.from_video:
            raise ApiError(
                400,
                "invalid_request",
                f"A {kind} job is JSON: upload its files "
                "(POST /v1/uploads), then send the request naming their keys.",
            )
        for name, value in fields.items():  # a form's true and false are words
            info = spec.request.model_fields.get(name)
            if info is not None and info.annotation is bool:
                fields[name] = _form_bool(name, value)
        upload = Upload(key, filename)
        return await _intake(request, tenant_of(request), kind,
                             {**fields, "source": {"key": key}}, upload)  # fmt: skip
    except BaseException:
        if key is not None:  # the request failed after the upload: keep nothing behind
            await asyncio.shield(services.store.delete(key))
        raise


async def _chunks(part: BodyPartReader) -> Any:
    while chunk := await part.read_chunk(1024 * 1024):
        yield chunk


def _form_bool(name: str, value: str) -> bool:
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise PermanentError(f"{name} must be true or false", code="invalid_request")


_queue_depth: dict[str, tuple[float, int]] = {}


async def _check_load(request: web.Request) -> None:
    """Refuse new jobs (503 `overloaded`) while the backlog of every stage together passes
    MAX_QUEUE_DEPTH."""
    services = request.app[SERVICES]
    limit = services.settings.max_queue_depth
    if not limit:
        return
    depth = await queue_depth(services)
    if depth >= limit:
        raise ApiError(
            503, "overloaded", "Too many jobs are waiting; try again shortly.",
            headers={"Retry-After": "30"},
        )  # fmt: skip


async def queue_depth(services: Services) -> int:
    """Jobs waiting for a worker: the lag of every stage's group (every stage `job.stages`
    declares), every priority, read at most once a second. Every stage, not the first only: a
    compose job starts at render, and a subtitle job waits twice (transcribe, then render), so
    a render backlog is a backlog too."""
    keys = services.keys
    checked_at, depth = _queue_depth.get(keys.prefix, (0.0, 0))
    if time.monotonic() - checked_at < QUEUE_CHECK_S:
        return depth
    depth = 0
    for stage in Stage:
        group = keys.stage_group(stage)
        for stream in keys.stage_streams(stage):
            depth += (await bus.group_counts(services.redis, stream, group))[1]
    _queue_depth[keys.prefix] = (time.monotonic(), depth)
    return depth


@routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """The caller's jobs, newest first, in pages: `?limit=` (1-200) and `?before=` (the `next`
    cursor of the previous page)."""
    services = request.app[SERVICES]
    try:
        limit = int(request.query.get("limit", "50"))
        before = float(request.query["before"]) if "before" in request.query else None
    except ValueError:
        limit, before = 0, None
    if not 1 <= limit <= 200 or (before is not None and not 0 < before < 1e11):
        raise ApiError(400, "invalid_request", "limit is 1-200; before is a `next` cursor")
    jobs = await services.jobs.recent(tenant_of(request), limit, before)
    ttl = services.settings.download_url_ttl_s
    body = [await present_job(job, services.store, ttl) for job in jobs]
    cursor = repr(jobs[-1].created_at) if len(jobs) == limit else None
    return web.json_response({"jobs": body, "next": cursor})


@routes.get("/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    return web.json_response(await job_body(request, await job_or_404(request)))


@routes.get("/v1/jobs/{job_id}/events")
async def job_events(request: web.Request) -> web.StreamResponse:
    if sse.wants_stream(request):
        return await sse.stream(request)
    job = await sse.events_job(request)
    after = request.query.get("after", "0-0")
    if not is_stream_id(after):
        raise ApiError(400, "invalid_request", "after must be an event id such as '0-0'")
    events = await request.app[SERVICES].jobs.events(job.id, after=after)
    return web.json_response({"job_id": job.id, "events": [e.to_public() for e in events]})


@routes.delete("/v1/jobs/{job_id}")
async def cancel_job(request: web.Request) -> web.Response:
    job = await job_or_404(request)
    services = request.app[SERVICES]
    # The worker running it (if any) is told in the same step, and stops at once.
    applied = await services.jobs.apply(job.id, Cancel())
    if applied.ok:
        services.metrics.jobs_finished.labels(job.kind.value, "cancelled").inc()
    else:
        status = applied.status.value if applied.status else "gone"
        raise ApiError(
            409,
            "conflict",
            f"The job is already {status}; only queued or running jobs can be cancelled.",
        )
    cancelled = await job_or_404(request)
    assert cancelled.status is Status.CANCELLED
    return web.json_response(await job_body(request, cancelled))
