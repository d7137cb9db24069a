"""What gateway handlers share: the services, the public URLs, and JSON body parsing."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from vidstream.feed.hub import Hub
from vidstream.services import Services


@dataclass
class PublicUrls:
    """How clients reach the gateway and the notifier. Mutable: with port 0 (tests) the entry
    point fills them in once the servers are bound, before the first request."""

    gateway: str
    ws: str


SERVICES = web.AppKey("services", Services)
HUB = web.AppKey("hub", Hub)  # the gateway's own fan-out, for Server-Sent Events
URLS = web.AppKey("urls", PublicUrls)


def base_url(request: web.Request) -> str:
    return request.app[URLS].gateway
