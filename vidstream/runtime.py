"""Compose roles into a running process: the shared clients, then each role, then wait for a signal.

Signals only set events. The first SIGINT/SIGTERM starts a graceful stop (workers finish their
jobs within SHUTDOWN_GRACE_S); a second one cuts the grace period short.
"""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.exceptions import RedisError

from vidstream.core import logs
from vidstream.core.auth import KeyRing
from vidstream.core.backoff import Backoff
from vidstream.core.errors import ConfigError, StorageError
from vidstream.core.lifecycle import Component
from vidstream.core.settings import Settings
from vidstream.core.signing import Signer, load_secret
from vidstream.core.tasks import cancel_and_wait
from vidstream.job import stages
from vidstream.job.stages import Stage
from vidstream.ops.devredis import PrivateRedis
from vidstream.ops.joblogs import JobLogShipper
from vidstream.ops.maintenance import Maintenance
from vidstream.ops.metrics import MetricsServer
from vidstream.ops.retention import Retention
from vidstream.services import Services, connect_redis
from vidstream.state.sharing import SharedStorage
from vidstream.storage import LocalStore, ObjectStore, Place, open_store

if TYPE_CHECKING:  # each role's modules are imported by the processes that run it (memory)
    from vidstream.actors.worker import Worker
    from vidstream.http.app import Gateway
    from vidstream.notifier.server import Notifier

ROLES = stages.ROLE_NAMES  # every role (`job.stages`), in the order they start
STORAGE_CHECK_TIMEOUT_S = 15.0

log = logs.get(role="main")


def worker_class(stage: Stage) -> type[Worker]:
    """The worker that runs `stage`; imported only by the processes that run it (memory)."""
    match stage:
        case Stage.TRANSCRIBE:
            from vidstream.actors.transcribe import TranscribeWorker

            return TranscribeWorker
        case Stage.RENDER:
            from vidstream.actors.render import RenderWorker

            return RenderWorker


async def wait_for_redis(redis: Redis) -> None:
    """Return once Redis answers, logging and backing off while it does not."""
    backoff = Backoff()
    while True:
        try:
            await redis.ping()
            return
        except (RedisError, OSError) as exc:
            log.warning("waiting_for_redis", error=str(exc))
            await backoff.sleep()


async def check_storage(store: ObjectStore) -> None:
    """Refuse to start on wrong storage settings (`ConfigError`); only warn when storage is
    unreachable for now: /readyz reports it, and jobs retry once it is back."""
    try:
        async with asyncio.timeout(STORAGE_CHECK_TIMEOUT_S):
            await store.check()
    except (StorageError, TimeoutError) as exc:
        log.warning("storage_unavailable", storage=store.name, error=str(exc) or "timed out")


async def place_of(store: ObjectStore) -> Place:
    """Which files `store` reaches; a local folder that cannot be written is a `ConfigError`."""
    try:
        return await store.place()
    except StorageError as exc:
        raise ConfigError(str(exc)) from exc


class Stack(Component):
    """The roles of one process and the clients they share, started and closed as one."""

    def __init__(
        self, settings: Settings, roles: tuple[str, ...] = ROLES, *, dev: bool = False
    ) -> None:
        self.settings = settings
        self.roles = roles
        self.dev = dev  # `vidstream dev`: a private Redis if none answers; keys optional
        self.gateway: Gateway | None = None
        self.notifier: Notifier | None = None
        self.workers: list[Worker] = []
        self.services: Services | None = None
        self._exit = AsyncExitStack()

    async def start(self) -> None:
        s, enter = self.settings, self._exit.enter_async_context
        api_keys = self._api_keys()
        if self.dev and not s.redis_sentinels:  # (with Sentinels, their primary or nothing)
            await enter(PrivateRedis(s.redis_url, Path(s.data_dir)))
        redis = connect_redis(s)
        self._exit.push_async_callback(redis.aclose)
        await wait_for_redis(redis)
        signer = Signer(load_secret(s))
        store = await enter(open_store(s, signer))
        await check_storage(store)
        self.services = services = Services.build(s, redis, store, signer, api_keys)
        # Before any role: a process whose storage reaches other files than the running ones'
        # (local storage on another host) refuses to start.
        await enter(SharedStorage(redis, services.keys, await place_of(store)))
        retention = Retention(redis, services.keys, store, keep_outputs=s.keep_outputs)
        await enter(Maintenance(redis, services.keys, services.jobs, retention=retention,
                                visibility_timeout_s=s.visibility_timeout_s))  # fmt: skip
        # Closed after the roles: it gets their last lines. A running job's logs are kept as long
        # as the longest retention (an ended job's follow its own expiry).
        keep_s = max(services.jobs.ttl_s, services.jobs.failed_ttl_s)
        await enter(JobLogShipper(services.redis, services.keys, keep_s))
        # The notifier first, so the gateway can hand out its real URL; on close, the reverse
        # order keeps it up while workers finish, so clients see the last events.
        if "notifier" in self.roles:
            from vidstream.notifier.server import Notifier

            self.notifier = await enter(Notifier(services))
        if "gateway" in self.roles:
            from vidstream.http.app import Gateway
            from vidstream.webhooks.deliver import WebhookDeliverer

            ws_url = self.notifier.url if self.notifier else None
            self.gateway = await enter(Gateway(services, ws_url=ws_url))
            if self.notifier is not None:  # the gateway's page may watch jobs
                self.notifier.allow_origin(self.gateway.url)
            if isinstance(store, LocalStore) and not s.public_url:
                store.base_url = self.gateway.url
            # Every gateway process delivers webhooks (after the links in them are known).
            await enter(WebhookDeliverer(services))
        for role in stages.ROLES:  # a worker for each stage whose role this process runs
            if role.stage is not None and role.name in self.roles:
                worker = worker_class(role.stage)(services, concurrency=s.concurrency)
                self.workers.append(await enter(worker))
        if s.metrics_port and "gateway" not in self.roles:  # the gateway serves /metrics itself
            metrics = MetricsServer(services.metrics, redis, services.keys, s.metrics_host,
                                    s.metrics_port)  # fmt: skip
            await enter(metrics)

    def _api_keys(self) -> KeyRing | None:
        """The keys the client-facing roles accept, or None when authentication is off."""
        if not {"gateway", "notifier"} & set(self.roles):
            return None
        if self.settings.auth == "off":
            log.warning(
                "authentication_off",
                reason="VIDSTREAM_AUTH=off; anyone who reaches the gateway can use it, as admin",
                fix="create keys (vidstream keys create --tenant NAME) and unset VIDSTREAM_AUTH",
            )
            return None
        ring = KeyRing(self.settings)
        if len(ring):
            return ring
        if self.dev:
            log.warning(
                "authentication_off",
                reason="no API keys exist; anyone who reaches the gateway can use it",
                fix="vidstream keys create --tenant NAME",
            )
            return None
        raise ConfigError(
            "no API keys: create one with `vidstream keys create --tenant NAME` (or set "
            "VIDSTREAM_API_KEYS), or set VIDSTREAM_AUTH=off on a trusted network"
        )

    async def close(self) -> None:
        await self._exit.aclose()

    def hurry(self) -> None:
        for worker in self.workers:
            worker.hurry()


async def serve(settings: Settings, roles: tuple[str, ...], *, dev: bool = False) -> int:
    """Run `roles` until SIGINT or SIGTERM; return the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stack = Stack(settings, roles, dev=dev)
    received: list[int] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig)
        if len(received) == 1:
            log.info("stopping", signal=sig.name, grace_s=settings.shutdown_grace_s)
            stop.set()
        else:
            log.warning("stopping_now", signal=sig.name)
            stack.hurry()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        starting = asyncio.create_task(stack.__aenter__())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([starting, stopped], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # a signal while waiting for Redis: give up starting
            await cancel_and_wait([starting, stopped])
            return 0
        stopped.cancel()
        starting.result()
        try:
            urls = {
                "gateway": stack.gateway.url if stack.gateway else None,
                "notifier": stack.notifier.url if stack.notifier else None,
            }
            log.info("vidstream_ready", roles=list(roles), **{k: v for k, v in urls.items() if v})
            await stop.wait()
        finally:
            await stack.close()
        log.info("stopped")
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
