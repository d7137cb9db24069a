"""The hosted page: `GET /` and its files under `/static/`, a reference client of the public API.

The page is plain HTML, CSS and JavaScript with no build step; it talks to the gateway only
through the documented API, so a frontend on another origin can serve the same files (with
its origin in CORS_ORIGINS). Both routes are outside `/v1/` and need no key.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from vidstream.http.errors import ApiError

routes = web.RouteTableDef()

STATIC = Path(__file__).with_name("static")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# Scripts and styles from this server only. Media, downloads and uploads may live in a
# bucket, and the WebSocket on the notifier's host, so those may go to any http(s)/ws(s) URL.
CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self' ws: wss: http: https:",
        "media-src 'self' http: https: blob: data:",
        "img-src 'self' http: https: blob: data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # signed links must not leak to other sites
}


# The files `/static/` may answer with, by name: those of the folder, nothing below it.
FILES = {p.name: p for p in STATIC.iterdir() if p.is_file() and p.suffix in _TYPES}


def _file(path: Path, cache: str) -> web.FileResponse:
    return web.FileResponse(
        path,
        headers={**SECURITY_HEADERS, "Content-Type": _TYPES[path.suffix], "Cache-Control": cache},
    )


@routes.get("/")
async def index(request: web.Request) -> web.FileResponse:
    # Revalidated on every visit, so a new release's page never pairs with old scripts for long.
    return _file(STATIC / "index.html", "no-cache")


@routes.get("/static/{name}")
async def static(request: web.Request) -> web.FileResponse:
    # A name is looked up among the folder's files, never joined onto a path: `..`, encoded
    # slashes and absolute names cannot reach anything else.
    path = FILES.get(request.match_info["name"])
    if path is None:
        raise ApiError(404, "not_found", "No such file.")
    return _file(path, "public, max-age=300")
