"""The webhook deliverer: every gateway process runs one; together they deliver each attempt once.

Each attempt POSTs the job object as clients see it, signed with the tenant's webhook secret.
A 2xx answer delivers it. Anything else (another status, a redirect, no answer within
WEBHOOK_TIMEOUT_S) is tried again later with exponential backoff and jitter (from
WEBHOOK_RETRY_BASE_S, doubling, at most 10 minutes apart) while the job ended less than
WEBHOOK_MAX_AGE_S ago; then it is given up. A target that is not a public address is refused at
once, unless WEBHOOK_ALLOW_PRIVATE. Retries wait in Redis, so they outlive the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import socket
import time
from enum import StrEnum

import aiohttp
from redis.exceptions import RedisError
from structlog.stdlib import BoundLogger
from yarl import URL

from vidstream.core import logs
from vidstream.core.backoff import Backoff
from vidstream.core.errors import PermanentError
from vidstream.core.signing import load_secret
from vidstream.core.tasks import Service, TaskSet, cancel_and_wait, every
from vidstream.job.policy import Limits, retry_delay
from vidstream.job.present import present_job
from vidstream.services import Services
from vidstream.webhooks.post import post
from vidstream.webhooks.queue import Delivery, WebhookQueue
from vidstream.webhooks.signature import HEADER, sign, webhook_secret
from vidstream.webhooks.targets import TargetRefused, check_webhook_url

RETRY_MAX_DELAY_S = 600.0
PROMOTE_INTERVAL_S = 1.0
MAX_IN_FLIGHT = 16  # attempts one process makes at once
IN_FLIGHT_GRACE_S = 2.0  # on close, how long attempts under way may take to finish
USER_AGENT = "vidstream-webhooks/1"


class Result(StrEnum):
    """What became of one attempt."""

    DELIVERED = "delivered"
    RETRYING = "retrying"  # failed; the next attempt waits in Redis
    GAVE_UP = "gave_up"  # failed, and WEBHOOK_MAX_AGE_S has passed since the job ended
    REFUSED = "refused"  # the target is not a public address: never tried
    GONE = "gone"  # the job expired or has no webhook_url any more
    PENDING = "pending"  # Redis failed: the entry stays pending, to be reclaimed


class WebhookDeliverer(Service):
    stop_grace_s = 5.0  # one blocking read, then IN_FLIGHT_GRACE_S, then cancelling the rest

    def __init__(
        self, services: Services, *, secret_key: str | None = None,
        claim_idle_s: float | None = None, promote_interval_s: float = PROMOTE_INTERVAL_S,
    ) -> None:  # fmt: skip
        s = self.settings = services.settings
        self.services = services
        self._secret_key = secret_key
        self.limits = Limits(base_delay_s=s.webhook_retry_base_s, max_delay_s=RETRY_MAX_DELAY_S)
        self.promote_interval_s = promote_interval_s
        # Longer than any attempt can take, so a live deliverer's entry is never reclaimed.
        claim_idle_s = claim_idle_s if claim_idle_s is not None else 2 * s.webhook_timeout_s + 30
        self.name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.queue = WebhookQueue(
            services.redis, services.keys, self.name, int(claim_idle_s * 1000)
        )
        self._token = secrets.token_hex(8)
        self._tasks = TaskSet("webhook")
        self._in_flight: set[asyncio.Task[Result]] = set()
        self._group_ready = False
        self.log = logs.get(role="webhooks", consumer=self.name)

    async def wake(self) -> None:
        await self.queue.consumer.wake()

    async def close(self) -> None:
        await super().close()
        await self.queue.consumer.close()
        # A consumer with nothing pending is forgotten, so restarts do not pile names up in
        # the group; one still holding entries stays, for another deliverer to reclaim them.
        with contextlib.suppress(RedisError, TimeoutError):
            async with asyncio.timeout(self.settings.redis_timeout_s):
                if self._group_ready and not await self.queue.pending():
                    await self.services.redis.xgroup_delconsumer(
                        self.services.keys.webhooks, self.services.keys.webhook_group, self.name
                    )
                    self._group_ready = False

    async def run(self) -> None:
        promoter = asyncio.create_task(
            every(self.promote_interval_s, self.promote, "webhook_promote", self.stopping),
            name="webhook-promote",
        )
        backoff = Backoff()
        try:
            while not self.stopping.is_set():
                try:
                    await self._take_one()
                    backoff.reset()
                except RedisError as exc:
                    self.log.warning("webhook_read_failed", error=str(exc))
                    await backoff.sleep(self.stopping)
        finally:
            # Stopped taking attempts. Those under way may finish, briefly; the rest are
            # cancelled, and their entries, still pending, are reclaimed later.
            if self._in_flight:
                await asyncio.wait(self._in_flight, timeout=IN_FLIGHT_GRACE_S)
            await self._tasks.close(1.0)
            await cancel_and_wait([promoter], 1.0)

    async def _take_one(self) -> None:
        if not self._group_ready:
            await self.queue.ensure_group()
            self._group_ready = True
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            # Full: wait for an attempt to end (each is bounded by WEBHOOK_TIMEOUT_S).
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            return
        delivery = await self.queue.next()
        if delivery is not None:
            task = self._tasks.spawn(self.attempt(delivery), delivery.entry_id)
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def step(self) -> Result | None:
        """Take the next attempt and make it, here and now; None if there was none (for tests
        and tools: a started deliverer does this by itself)."""
        await self.queue.ensure_group()
        delivery = await self.queue.next()
        return None if delivery is None else await self.attempt(delivery)

    async def promote(self) -> int:
        """Move due retries onto the stream, if this process's turn; return how many."""
        # The lock lapses a little before the next period, so the next winner may be anyone.
        lock = self.services.keys.lock("webhook-promote")
        ttl_ms = max(int(self.promote_interval_s * 900), 1)
        if not await self.services.redis.set(lock, self._token, nx=True, px=ttl_ms):
            return 0
        return await self.queue.promote()

    def headers(self, tenant: str, delivery: Delivery, body: bytes) -> dict[str, str]:
        """The headers of an attempt, signed now."""
        if self._secret_key is None:  # the same secret every process derives (load_secret)
            self._secret_key = load_secret(self.settings).decode()
        return {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Vidstream-Event": delivery.event,
            "Vidstream-Delivery": delivery.delivery_id,
            HEADER: sign(webhook_secret(self._secret_key, tenant), body),
        }

    async def attempt(self, delivery: Delivery) -> Result:
        """Make one attempt and settle its entry: delivered, retried later, refused or given
        up. Never raises but for cancellation."""
        log = self.log.bind(job_id=delivery.job_id, delivery=delivery.delivery_id,
                            attempt=delivery.attempt, event=delivery.event)  # fmt: skip
        s = self.settings
        try:
            job = await self.services.jobs.get(delivery.job_id)
            if job is None or not job.webhook_url:
                log.warning("webhook_job_gone")
                await asyncio.shield(self.queue.ack(delivery))
                return Result.GONE
            # Not the URL: it may hold a token. The request id: one grep follows the job here too.
            log = log.bind(host=URL(job.webhook_url).host, request_id=job.request_id or None)
            body = json.dumps(
                await present_job(job, self.services.store, s.download_url_ttl_s)
            ).encode()
            started = time.monotonic()
            error: str | None = None
            try:
                url = check_webhook_url(job.webhook_url, allow_private=s.webhook_allow_private)
                answer = await post(url, body, self.headers(job.tenant, delivery, body),
                                    allow_private=s.webhook_allow_private,
                                    timeout_s=s.webhook_timeout_s)  # fmt: skip
                if not answer.ok:
                    error = f"HTTP {answer.status}"
                    if answer.location is not None:
                        error += " (a redirect: not followed)"
            except (TargetRefused, PermanentError) as exc:
                log.warning("webhook_refused", reason=getattr(exc, "message", str(exc)))
                await asyncio.shield(self.queue.ack(delivery))
                return Result.REFUSED
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                error = str(exc) or type(exc).__name__
            duration_ms = round((time.monotonic() - started) * 1000)
            if error is None:
                await asyncio.shield(self.queue.ack(delivery))
                log.info("webhook_delivered", duration_ms=duration_ms)
                return Result.DELIVERED
            return await self._retry_or_give_up(delivery, error, duration_ms, log)
        except RedisError as exc:
            log.warning("webhook_redis_failed", error=str(exc))
            return Result.PENDING

    async def _retry_or_give_up(
        self, delivery: Delivery, error: str, duration_ms: int, log: BoundLogger
    ) -> Result:
        delay = retry_delay(delivery.attempt, self.limits, random.uniform(0.5, 1.5))
        deadline_ms = delivery.ended_ms + int(self.settings.webhook_max_age_s * 1000)
        if await asyncio.shield(self.queue.retry(delivery, delay, deadline_ms)):
            log.info("webhook_retrying", error=error, retry_in_s=round(delay, 3),
                     duration_ms=duration_ms)  # fmt: skip
            return Result.RETRYING
        log.warning("webhook_gave_up", error=error, attempts=delivery.attempt,
                    duration_ms=duration_ms)  # fmt: skip
        return Result.GAVE_UP
