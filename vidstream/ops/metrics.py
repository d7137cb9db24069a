"""Prometheus metrics: one registry per process, shared by the roles it runs.

The gateway serves it at `GET /metrics` (in `vidstream dev` that is every role's numbers), the
notifier at `GET /metrics` on its own port, and a worker-only process on `METRICS_PORT` when set.
Queue gauges are read from Redis (`XINFO GROUPS`) when scraped, so they are never stale.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis

from vidstream.core.lifecycle import Component
from vidstream.job.model import PRIORITIES, Stage
from vidstream.state import bus
from vidstream.state.keys import Keys

_SECONDS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
_HTTP_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.jobs_created = Counter(
            "vidstream_jobs_created", "Jobs created, by kind", ["kind"], registry=r
        )
        self.jobs_finished = Counter(
            "vidstream_jobs_finished", "Jobs that ended, by kind and final status",
            ["kind", "status"], registry=r,
        )  # fmt: skip
        self.stage_duration = Histogram(
            "vidstream_stage_duration_seconds", "Time one run of a stage took, by outcome",
            ["stage", "outcome"], buckets=_SECONDS, registry=r,
        )  # fmt: skip
        self.retries = Counter(
            "vidstream_retries", "Stage runs scheduled to run again, by error code",
            ["stage", "code"], registry=r,
        )  # fmt: skip
        self.dead_letters = Counter(
            "vidstream_dead_letters", "Jobs that ran out of attempts", ["stage"], registry=r
        )
        self.stage_failures = Counter(
            "vidstream_stage_failures",
            "Stage runs that failed, by error code (FFmpeg and Whisper failures among them)",
            ["stage", "code"], registry=r,
        )  # fmt: skip
        self.whisper_rtf = Histogram(
            "vidstream_whisper_realtime_factor",
            "Seconds of transcription per second of audio",
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5), registry=r,
        )  # fmt: skip
        self.ws_connections = Gauge(
            "vidstream_ws_connections", "Open WebSocket connections", registry=r
        )
        self.ws_messages = Counter(
            "vidstream_ws_messages_sent", "Messages sent to WebSocket clients", registry=r
        )
        self.http_requests = Counter(
            "vidstream_http_requests", "HTTP requests, by route, method and status",
            ["route", "method", "status"], registry=r,
        )  # fmt: skip
        self.http_latency = Histogram(
            "vidstream_http_request_duration_seconds", "HTTP request latency, by route",
            ["route", "method"], buckets=_HTTP_SECONDS, registry=r,
        )  # fmt: skip
        labels = ["stage", "priority"]  # one stream each; `sum by (stage)` for the stage
        self.queue_length = Gauge(
            "vidstream_queue_length", "Entries in a stage's stream", labels, registry=r
        )
        self.queue_lag = Gauge(
            "vidstream_queue_lag", "Entries no worker of the stage has read yet", labels,
            registry=r,
        )  # fmt: skip
        self.queue_pending = Gauge(
            "vidstream_queue_pending", "Entries read but not yet acked (jobs running)", labels,
            registry=r,
        )  # fmt: skip

    async def refresh(self, redis: Redis, keys: Keys) -> None:
        """Read each stage stream's length, lag and pending entries into the gauges."""
        for stage in Stage:
            group = keys.stage_group(stage)
            for priority in PRIORITIES:
                stream = keys.stage_stream(stage, priority)
                length, lag, pending = await bus.group_counts(redis, stream, group)
                self.queue_length.labels(stage.value, priority.value).set(length)
                self.queue_lag.labels(stage.value, priority.value).set(lag)
                self.queue_pending.labels(stage.value, priority.value).set(pending)

    async def exposition(self, redis: Redis, keys: Keys) -> bytes:
        """The registry in the Prometheus text format, queue gauges read just now."""
        await self.refresh(redis, keys)
        return generate_latest(self.registry)


CONTENT_TYPE = CONTENT_TYPE_LATEST


class MetricsServer(Component):
    """`GET /metrics` on its own port, for processes that run no gateway (METRICS_PORT)."""

    def __init__(self, metrics: Metrics, redis: Redis, keys: Keys, host: str, port: int) -> None:
        self.metrics, self.redis, self.keys = metrics, redis, keys
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]

    async def _serve(self, request: web.Request) -> web.Response:
        body = await self.metrics.exposition(self.redis, self.keys)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
