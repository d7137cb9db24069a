"""What gateway handlers share: the services, the public URLs, and JSON body parsing."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from vidstream.http.errors import ApiError
from vidstream.services import Services


@dataclass
class PublicUrls:
    """How clients reach the gateway and the notifier. Mutable: with port 0 (tests) the entry
    point fills them in once the servers are bound, before the first request."""

    gateway: str
    ws: str


SERVICES = web.AppKey("services", Services)
URLS = web.AppKey("urls", PublicUrls)


def base_url(request: web.Request) -> str:
    return request.app[URLS].gateway


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "The request body must be a JSON object.")
    return body
