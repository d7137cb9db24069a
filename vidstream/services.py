"""The shared clients every role uses, built once per process by the entry point."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from vidstream.core.auth import KeyRing
from vidstream.core.settings import Settings
from vidstream.core.signing import Signer
from vidstream.ops.metrics import Metrics
from vidstream.state.budget import BudgetedRedis
from vidstream.state.bus import BLOCK_MS
from vidstream.state.jobstore import JobStore
from vidstream.state.keys import Keys
from vidstream.state.replication import Replication
from vidstream.state.sentinel import sentinel_client
from vidstream.storage import ObjectStore

# Connections one process opens to Redis at most. redis-py's own default (100, then errors)
# would turn a burst of requests or subscriptions into failures; past this a command waits for a
# free connection, up to REDIS_TIMEOUT_S.
MAX_CONNECTIONS = 500


def connect_redis(settings: Settings) -> Redis:
    """A Redis client with timeouts on every call and retries on dropped connections; inside a
    `budget.redis_budget` (a gateway request, until its answer starts) all of its calls together
    keep to that budget instead. With REDIS_SENTINELS it finds the primary through them and
    follows it through a failover (`state.sentinel`)."""
    options: dict[str, Any] = {
        "max_connections": MAX_CONNECTIONS,
        "timeout": settings.redis_timeout_s,
        "decode_responses": True,
        "socket_connect_timeout": settings.redis_timeout_s,
        "socket_timeout": settings.redis_timeout_s + BLOCK_MS / 1000,
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=3),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "health_check_interval": 30,
    }
    if settings.redis_sentinels:
        # REDIS_URL still names the database and credentials; the primary's address is asked.
        url: dict[str, Any] = dict(parse_url(settings.redis_url))
        ssl = url.pop("connection_class", None) is SSLConnection
        for name in ("host", "port"):
            url.pop(name, None)
        return sentinel_client(
            BudgetedRedis, settings.sentinel_addresses, settings.redis_master_name,
            timeout_s=settings.redis_timeout_s, ssl=ssl, options={**url, **options},
        )  # fmt: skip
    pool = BlockingConnectionPool.from_url(settings.redis_url, **options)
    client: Redis = BudgetedRedis.from_pool(pool)  # closing the client closes its pool
    return client


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    redis: Redis
    keys: Keys
    jobs: JobStore
    store: ObjectStore
    signer: Signer
    api_keys: KeyRing | None = None  # None: authentication is off (one tenant, `default`)
    metrics: Metrics = field(default_factory=Metrics)  # one registry for the process's roles

    @classmethod
    def build(
        cls, settings: Settings, redis: Redis, store: ObjectStore, signer: Signer,
        api_keys: KeyRing | None = None,
    ) -> Services:  # fmt: skip
        keys = Keys(settings.redis_prefix)
        replication = None
        if wanted := settings.redis_wait_replicas:
            wait_ms = round(settings.redis_wait_timeout_s * 1000)
            replication = Replication(wanted, wait_ms, keys.replicated)
        jobs = JobStore(redis, keys, ttl_s=settings.job_retention_s,
                    failed_ttl_s=settings.failed_job_retention_s,
                    events_ttl_s=settings.event_retention_s, replication=replication)  # fmt: skip
        return cls(settings, redis, keys, jobs, store, signer, api_keys)
