"""The gateway role: the aiohttp application and its server lifecycle."""

from __future__ import annotations

from aiohttp import web

from vidstream import kinds as kind_handlers
from vidstream.core import logs
from vidstream.core.admission import Admission, connection_cap
from vidstream.core.lifecycle import Component
from vidstream.feed.hub import Hub
from vidstream.feed.redis import redis_hub
from vidstream.http import admin, compose, health, jobs, openapi, page, recovery, sse, uploads
from vidstream.http import kinds as kinds_api
from vidstream.http import logs as job_logs
from vidstream.http import models as models_api
from vidstream.http import stats as operator_stats
from vidstream.http import workers as operator_workers
from vidstream.http.auth import auth_middleware
from vidstream.http.connections import GuardedSite, client_middleware
from vidstream.http.errors import cors_middleware, errors_middleware
from vidstream.http.limits import body_timeout_middleware, lift_budget, redis_budget_middleware
from vidstream.http.observe import observe_middleware
from vidstream.http.state import HUB, SERVICES, URLS, PublicUrls
from vidstream.media.models import catalogue
from vidstream.services import Services


def create_app(services: Services, urls: PublicUrls, hub: Hub | None = None) -> web.Application:
    settings = services.settings
    # The models jobs may choose, read now: a misnamed one stops the gateway at start, not
    # each request that asks.
    catalogue(settings.whisper_model, settings.whisper_models_dir)
    app = web.Application(
        client_max_size=1024 * 1024,  # JSON bodies; uploads stream and are limited separately
        middlewares=[
            client_middleware(settings.proxies),  # first: every other one sees the client
            observe_middleware(services.metrics),
            cors_middleware(settings.cors_origins),
            errors_middleware,
            body_timeout_middleware(settings.http_body_timeout_s),
            redis_budget_middleware(settings.redis_request_timeout_s),
            auth_middleware(services, services.api_keys),
        ],
    )
    app.on_response_prepare.append(lift_budget)
    app[SERVICES] = services
    app[URLS] = urls
    app[HUB] = hub or redis_hub(services)
    app[sse.STREAMS] = set()
    app.add_routes(health.routes)
    app.add_routes(jobs.routes)
    app.add_routes(kinds_api.routes)
    app.add_routes(models_api.routes)
    app.add_routes(compose.routes)
    app.add_routes(job_logs.routes)
    app.add_routes(uploads.routes)
    app.add_routes(recovery.routes)
    app.add_routes(operator_workers.routes)
    app.add_routes(operator_stats.routes)
    app.add_routes(admin.routes)
    app.add_routes(openapi.routes)
    app.add_routes(page.routes)
    return app


class Gateway(Component):
    """Serves the REST API on `host:port` (0 picks a free port; see `url`)."""

    def __init__(self, services: Services, *, ws_url: str | None = None) -> None:
        self.services = services
        settings = services.settings
        self.host, self.port = settings.gateway_host, settings.gateway_port
        self.urls = PublicUrls(gateway=settings.gateway_url, ws=ws_url or settings.ws_url)
        self._runner: web.AppRunner | None = None
        self.hub = redis_hub(services)  # fan-out for Server-Sent Events (http.sse)
        self.log = logs.get(role="gateway")

    @property
    def url(self) -> str:
        return self.urls.gateway

    async def start(self) -> None:
        """Bind and serve; safe to call twice."""
        if self._runner is not None:
            return
        kind_handlers.load_all()  # every kind's intake, before the first request needs one
        await self.hub.start()
        settings = self.services.settings
        self._runner = web.AppRunner(
            create_app(self.services, self.urls, self.hub), access_log=None, shutdown_timeout=5.0,
            keepalive_timeout=settings.http_idle_timeout_s,
        )  # fmt: skip
        await self._runner.setup()
        cap = connection_cap(settings.max_connections)
        admission = Admission(cap, settings.gateway_max_connections_per_ip, settings.proxies)
        site = GuardedSite(self._runner, self.host, self.port, admission=admission,
                           header_timeout_s=settings.http_header_timeout_s)  # fmt: skip
        await site.start()
        self.port = self._runner.addresses[0][1]
        if not self.services.settings.public_url:
            self.urls.gateway = self.services.settings.replace(gateway_port=self.port).gateway_url
        self.log.info("gateway_listening", url=self.urls.gateway)

    async def close(self) -> None:
        """Stop accepting, let requests in flight finish (bounded), close; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            sse.end_all(runner.app)  # event streams end now; clients resume elsewhere
            await runner.cleanup()
        await self.hub.close()
