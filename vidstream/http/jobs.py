"""`/v1/jobs`: create (JSON or multipart upload), read, list events, cancel."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from aiohttp import BodyPartReader, web

from vidstream.bus import is_stream_id
from vidstream.errors import PermanentError
from vidstream.http.errors import ApiError
from vidstream.http.idempotency import IdempotencyKey
from vidstream.http.state import SERVICES, URLS, base_url, read_json
from vidstream.jobs import Job, Kind, Options, Status, is_job_id, parse_kind
from vidstream.present import present_job
from vidstream.protocol import Cancel
from vidstream.storage.names import check_source_key, content_type_for, new_upload_key

routes = web.RouteTableDef()

_OPTION_FIELDS = ("language", "burn_subtitles", "formats")
_FORM_FIELDS = ("kind", *_OPTION_FIELDS)
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@routes.post("/v1/jobs")
async def create_job(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    multipart = request.content_type == "multipart/form-data"
    if not multipart and request.content_type not in ("application/json", ""):
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send application/json, or multipart/form-data with a 'file' field.",
        )
    idem = None
    if header := request.headers.get("Idempotency-Key"):
        # An upload's bytes are unknown before they are read, so a multipart request is
        # recognised by its key alone; a JSON request also by its body.
        fingerprint = "multipart" if multipart else hashlib.sha256(await request.read()).hexdigest()
        idem = IdempotencyKey(services.redis, services.keys, "default", header, fingerprint)
        if existing := await idem.reserve():
            job = await services.jobs.get(existing)
            if job is not None:
                return web.json_response(await job_body(request, job), status=200)
    try:
        source_key, options, kind = await (
            _receive_upload(request) if multipart else _json_job(request)
        )
        job = Job.new(source_key, options, kind=kind)
        await services.jobs.create(job)
    except BaseException:
        if idem is not None:
            await asyncio.shield(idem.release())
        raise
    if idem is not None:
        await idem.bind(job.id)
    body = await job_body(request, job)
    return web.json_response(body, status=202, headers={"Location": body["links"]["self"]})


async def job_body(request: web.Request, job: Job) -> dict[str, Any]:
    services = request.app[SERVICES]
    body = await present_job(job, services.store, services.settings.download_url_ttl_s)
    body["ws_token"] = services.signer.ws_token(job.id)
    body["links"] = {
        "self": f"{base_url(request)}/v1/jobs/{job.id}",
        "events": f"{base_url(request)}/v1/jobs/{job.id}/events",
        "ws": request.app[URLS].ws,
    }
    return body


async def _json_job(request: web.Request) -> tuple[str, Options, Kind]:
    services = request.app[SERVICES]
    body = await read_json(request)
    unknown = set(body) - {"source", *_FORM_FIELDS}
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown field(s): {', '.join(sorted(unknown))}")
    source = body.get("source")
    if not isinstance(source, dict) or not isinstance(source.get("key"), str):
        raise ApiError(400, "invalid_request", 'source must be {"key": "<storage key>"}')
    key = check_source_key(source["key"])
    options = Options.parse({k: body[k] for k in _OPTION_FIELDS if k in body})
    kind = parse_kind(body.get("kind", Kind.SUBTITLE))
    info = await services.store.head(key)
    if info is None:
        raise ApiError(400, "source_not_found", f"No uploaded object exists at {key!r}.")
    if info.size > services.settings.max_upload_bytes:
        raise ApiError(
            413,
            "too_large",
            f"The source is larger than {services.settings.max_upload_bytes} bytes.",
        )
    return key, options, kind


async def _receive_upload(request: web.Request) -> tuple[str, Options, Kind]:
    """Stream the `file` part to storage as it arrives; collect the option fields around it."""
    services = request.app[SERVICES]
    reader = await request.multipart()
    fields: dict[str, Any] = {}
    key: str | None = None
    try:
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "invalid_request", "nested multipart bodies are not supported")
            if part.name == "file":
                if key is not None:
                    raise ApiError(400, "invalid_request", "send one 'file' part per job")
                key = new_upload_key(part.filename or "upload")
                await services.store.put_stream(
                    key, _chunks(part), content_type_for(key), services.settings.max_upload_bytes
                )
            elif part.name in _FORM_FIELDS:
                value = await part.text()
                if part.name == "formats" and "formats" in fields:
                    fields["formats"] += "," + value
                else:
                    fields[part.name] = value
            else:
                raise ApiError(400, "invalid_request", f"unknown form field {part.name!r}")
        if key is None:
            raise ApiError(400, "missing_file", "The form has no 'file' field with the video.")
        if "burn_subtitles" in fields:
            fields["burn_subtitles"] = _form_bool(fields["burn_subtitles"])
        kind = parse_kind(fields.pop("kind", Kind.SUBTITLE))
        return key, Options.parse(fields), kind
    except BaseException:
        if key is not None:  # the request failed after the upload: keep nothing behind
            await services.store.delete(key)
        raise


async def _chunks(part: BodyPartReader) -> Any:
    while chunk := await part.read_chunk(1024 * 1024):
        yield chunk


def _form_bool(value: str) -> bool:
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise PermanentError("burn_subtitles must be true or false", code="invalid_request")


async def _job_or_404(request: web.Request) -> Job:
    job_id = request.match_info["job_id"]
    job = await request.app[SERVICES].jobs.get(job_id) if is_job_id(job_id) else None
    if job is None:
        raise ApiError(404, "not_found", f"No job with id {job_id!r}.")
    return job


@routes.get("/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    job = await _job_or_404(request)
    services = request.app[SERVICES]
    return web.json_response(
        await present_job(job, services.store, services.settings.download_url_ttl_s)
    )


@routes.get("/v1/jobs/{job_id}/events")
async def job_events(request: web.Request) -> web.Response:
    job = await _job_or_404(request)
    after = request.query.get("after", "0-0")
    if not is_stream_id(after):
        raise ApiError(400, "invalid_request", "after must be an event id such as '0-0'")
    events = await request.app[SERVICES].jobs.events(job.id, after=after)
    return web.json_response({"job_id": job.id, "events": [e.to_public() for e in events]})


@routes.delete("/v1/jobs/{job_id}")
async def cancel_job(request: web.Request) -> web.Response:
    job = await _job_or_404(request)
    services = request.app[SERVICES]
    # The worker running it (if any) is told in the same step, and stops at once.
    applied = await services.jobs.apply(job.id, Cancel())
    if not applied.ok:
        status = applied.status.value if applied.status else "gone"
        raise ApiError(
            409,
            "conflict",
            f"The job is already {status}; only queued or running jobs can be cancelled.",
        )
    cancelled = await _job_or_404(request)
    assert cancelled.status is Status.CANCELLED
    return web.json_response(
        await present_job(cancelled, services.store, services.settings.download_url_ttl_s)
    )
