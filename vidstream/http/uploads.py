"""Uploads: `POST /v1/uploads` hands out a signed PUT URL; `/v1/objects/{key}` serves local storage.

With S3 storage the URL is presigned for the bucket and the gateway never sees the bytes. With
local storage the URL points back here, signed with HMAC and expiring, so clients do the same.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

from aiohttp import web

from vidstream.http.auth import tenant_of
from vidstream.http.bodies import read_json, short
from vidstream.http.errors import ApiError
from vidstream.http.state import SERVICES
from vidstream.state.tickets import Ticket, Tickets
from vidstream.storage.names import (
    UPLOADS,
    check_key,
    content_disposition,
    new_upload_key,
    safe_filename,
)

routes = web.RouteTableDef()
_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,62}/[A-Za-z0-9][A-Za-z0-9.+-]{0,126}")


@routes.post("/v1/uploads")
async def create_upload(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    body = await read_json(request)
    if unknown := set(body) - {"filename", "content_type", "size"}:
        names = ", ".join(short(n, 30) for n in sorted(unknown)[:5])
        raise ApiError(400, "invalid_request", f"unknown field(s): {names}")
    filename, content_type, size = body.get("filename"), body.get("content_type"), body.get("size")
    if not isinstance(filename, str) or not filename.strip():
        raise ApiError(400, "invalid_request", "filename must be a non-empty string")
    if content_type is None:
        content_type = "application/octet-stream"
    if not isinstance(content_type, str) or not _MIME.fullmatch(content_type):
        raise ApiError(400, "invalid_request", "content_type must be a MIME type such as video/mp4")
    if isinstance(size, float) and size.is_integer():  # JSON has one number type: 12.0 is 12
        size = int(size)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ApiError(400, "invalid_request", "size must be the file's size in bytes")
    if size > settings.max_upload_bytes:
        raise ApiError(
            413, "too_large", f"Files up to {settings.max_upload_bytes} bytes are accepted."
        )
    key = new_upload_key()
    ticket = Ticket(key, tenant_of(request), safe_filename(filename), size, content_type)
    await Tickets(services.redis, services.keys).issue(ticket, settings.upload_url_ttl_s)
    url = await services.store.presign_put(key, content_type, size, settings.upload_url_ttl_s)
    expires_at = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + settings.upload_url_ttl_s)
    )
    return web.json_response(
        {
            "key": key,
            "upload_url": url,
            "method": "PUT",
            "headers": services.store.upload_headers(content_type),
            "expires_at": expires_at,
        },
        status=201,
    )


def _signed_key(request: web.Request, method: str) -> str:
    services = request.app[SERVICES]
    if services.store.name != "local":
        raise ApiError(404, "not_found", "This gateway does not serve storage objects.")
    key = check_key(request.match_info["key"])
    if not services.signer.check_object_url(method, key, dict(request.query)):
        raise ApiError(
            403, "invalid_signature", "The link is invalid or has expired; ask for a new one."
        )
    return key


@routes.put("/v1/objects/{key:.+}")
async def put_object(request: web.Request) -> web.Response:
    key = _signed_key(request, "PUT")
    services = request.app[SERVICES]
    # An upload link uploads once: a link that leaked cannot replace a source a job reads.
    if not key.startswith(UPLOADS) or not await Tickets(services.redis, services.keys).first_put(
        key
    ):
        raise ApiError(403, "link_used", "This upload link was used already; ask for a new one.")
    try:
        max_size = int(request.query["max_size"])
    except (KeyError, ValueError):
        raise ApiError(403, "invalid_signature", "The link is invalid.") from None
    if request.content_length is not None and request.content_length > max_size:
        raise ApiError(413, "too_large", f"This upload link accepts at most {max_size} bytes.")
    content_type = request.headers.get("Content-Type", "application/octet-stream")

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in request.content.iter_chunked(1024 * 1024):
            yield chunk

    info = await request.app[SERVICES].store.put_stream(key, chunks(), content_type, max_size)
    return web.json_response({"key": info.key, "size": info.size})


@routes.get("/v1/objects/{key:.+}")
async def get_object(request: web.Request) -> web.StreamResponse:
    key = _signed_key(request, "GET")
    store = request.app[SERVICES].store
    info = await store.head(key)
    path = store.local_path(key)
    if info is None or path is None:
        raise ApiError(404, "not_found", "The object no longer exists.")
    filename = safe_filename(request.query.get("filename", ""), default=key.rsplit("/", 1)[-1])
    return web.FileResponse(
        path,
        headers={
            "Content-Type": info.content_type,
            "Content-Disposition": content_disposition(filename),
            "Cache-Control": "private, max-age=300",
        },
    )
