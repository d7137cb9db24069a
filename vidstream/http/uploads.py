"""Uploads: `POST /v1/uploads` hands out a signed PUT URL; `/v1/objects/{key}` serves local storage.

With S3 storage the URL is presigned for the bucket and the gateway never sees the bytes. With
local storage the URL points back here, signed with HMAC and expiring, so clients do the same.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from vidstream.http.errors import ApiError
from vidstream.http.state import SERVICES, read_json
from vidstream.storage.names import check_key, content_disposition, new_upload_key, safe_filename

routes = web.RouteTableDef()


@routes.post("/v1/uploads")
async def create_upload(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    body = await read_json(request)
    filename, content_type, size = body.get("filename"), body.get("content_type"), body.get("size")
    if not isinstance(filename, str) or not filename.strip():
        raise ApiError(400, "invalid_request", "filename must be a non-empty string")
    if content_type is None:
        content_type = "application/octet-stream"
    if not isinstance(content_type, str) or "/" not in content_type or len(content_type) > 200:
        raise ApiError(400, "invalid_request", "content_type must be a MIME type such as video/mp4")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ApiError(400, "invalid_request", "size must be the file's size in bytes")
    if size > settings.max_upload_bytes:
        raise ApiError(
            413, "too_large", f"Files up to {settings.max_upload_bytes} bytes are accepted."
        )
    key = new_upload_key(filename)
    url = await services.store.presign_put(key, content_type, size, settings.upload_url_ttl_s)
    expires_at = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + settings.upload_url_ttl_s)
    )
    return web.json_response(
        {
            "key": key,
            "upload_url": url,
            "method": "PUT",
            "headers": {"Content-Type": content_type},
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
    max_size = int(request.query["max_size"])
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
