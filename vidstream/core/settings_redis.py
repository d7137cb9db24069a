"""The Redis part of `Settings`: where Redis is (one URL, or the Sentinels that know its primary)
and how far a write must have gone before it counts as done.

`Settings` inherits these fields: one frozen settings object still, declared in two modules so
neither outgrows its size. They come first in the README's table, as they always did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from vidstream.core.declare import setting
from vidstream.core.errors import ConfigError

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_REDIS = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class RedisSettings:
    redis_url: str = setting(
        "REDIS_URL",
        "redis://127.0.0.1:6379/0",
        "job state and streams (with `REDIS_SENTINELS`, only its database, user and password)",
        url=_REDIS,
    )
    redis_prefix: str = setting("REDIS_PREFIX", "vs", "prefix of every key vidstream writes")
    redis_timeout_s: float = setting(
        "REDIS_TIMEOUT_S", 5.0, "Redis connect and reply timeout", low=0.1
    )
    # A bound per request, not per command: five commands to a Redis that accepts and never
    # answers took 25 s with the per-command timeout and retries alone (vidstream/state/budget.py).
    redis_request_timeout_s: float = setting(
        "REDIS_REQUEST_TIMEOUT_S",
        2.0,
        "the longest an API request waits on Redis, all its commands together, until its "
        "answer starts; past it the answer is 503 `unavailable`",
        low=0.1,
    )
    # docs/redis.md: what a failover can lose, and how these bound it.
    redis_sentinels: tuple[str, ...] = setting(
        "REDIS_SENTINELS",
        (),
        "Redis Sentinels as `host:port`, comma-separated: every process asks them for the "
        "primary and follows it through a failover",
        shown_default="none",
    )
    redis_master_name: str = setting(
        "REDIS_MASTER_NAME", "mymaster", "the primary's name in the Sentinels' `sentinel monitor`"
    )
    redis_wait_replicas: int = setting(
        "REDIS_WAIT_REPLICAS",
        0,
        "replicas that must have a hand-off (a job made or cancelled, a stage finished, a "
        "retry, a job's end) before it counts as done (`WAIT`); 0: replication stays "
        "asynchronous",
        low=0,
        high=16,
    )
    redis_wait_timeout_s: float = setting(
        "REDIS_WAIT_TIMEOUT_S",
        0.5,
        "how long a hand-off waits for `REDIS_WAIT_REPLICAS`; past it the API answers 503 "
        "`unavailable` and a worker keeps its outcome and sends it again",
        low=0.01,
    )

    def check_redis(self) -> None:
        """Fail loudly on Redis settings that cannot work together, naming what to change."""
        if not _PREFIX_RE.match(self.redis_prefix):
            raise ConfigError(
                f"REDIS_PREFIX must be 1-32 of letters, digits, _ . -; got {self.redis_prefix!r}"
            )
        if self.redis_sentinels:
            self.sentinel_addresses  # noqa: B018 (parsed for its errors)
            if urlsplit(self.redis_url).scheme == "unix":
                raise ConfigError("REDIS_SENTINELS needs a redis:// or rediss:// REDIS_URL")
            if not self.redis_master_name:
                raise ConfigError("REDIS_SENTINELS needs REDIS_MASTER_NAME")
        # WAIT blocks its connection: past the reply timeout the client would drop it, and past
        # a request's budget the gateway answers 503 before knowing.
        bound = min(self.redis_timeout_s, self.redis_request_timeout_s)
        if self.redis_wait_replicas and self.redis_wait_timeout_s >= bound:
            raise ConfigError(
                f"REDIS_WAIT_TIMEOUT_S must be below REDIS_TIMEOUT_S and REDIS_REQUEST_TIMEOUT_S "
                f"({bound:g}); got {self.redis_wait_timeout_s:g}"
            )

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as (host, port) pairs."""
        return [_address(entry) for entry in self.redis_sentinels]


def _address(entry: str) -> tuple[str, int]:
    host, _, port = entry.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:26379
    if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"REDIS_SENTINELS entries must be host:port; got {entry!r}")
    return host, int(port)
