"""Every process of one deployment must reach the same files: checked through Redis at start.

Local storage (the default) is a folder on one machine. A worker started on another host with it
would find no upload and store outputs that no gateway serves; a gateway on local storage beside
workers on S3 would hand out links to files that never come. So each process, before its roles
start, joins the storage's users in Redis (`Keys.storage_users`) with the place its store
reaches (`ObjectStore.place`): the bucket, or the local folder by the id written into it. A
process whose place differs from a live user's refuses to start with a `ConfigError` that says
what to set. Processes on one machine sharing one data dir, or hosts mounting one share, read
the same id and start.

A user renews its membership every third of `LAPSE_S` and leaves when it stops; one that died
lapses after `LAPSE_S`, so a deployment can move to new hosts or to S3 once its old processes
are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from vidstream.core import logs
from vidstream.core.backoff import pause
from vidstream.core.errors import ConfigError
from vidstream.core.tasks import Service
from vidstream.state import scripts
from vidstream.state.keys import Keys
from vidstream.storage.base import Place

LAPSE_S = 30.0  # a process that stopped renewing is no longer a user after this
LEAVE_TIMEOUT_S = 3.0

_S3 = (
    "VIDSTREAM_STORAGE=s3 with S3_BUCKET (and S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY for R2 or MinIO)"
)

log = logs.get(role="storage")


@dataclass(frozen=True, slots=True)
class User:
    """A live process's membership, as stored: `<place>|<nonce>|<where>`."""

    backend: str
    id: str
    where: str

    @classmethod
    def parse(cls, member: str) -> User:
        place, _, rest = member.partition("|")
        backend, _, found = place.partition(":")
        return cls(backend, found, rest.partition("|")[2])


def refusal(mine: Place, theirs: User, prefix: str) -> str:
    """Why a process whose store reaches `mine` may not run beside a live user of `theirs`, and
    what to set instead."""
    running = (
        f"VIDSTREAM_STORAGE={mine.backend} reaches {mine.where}, but the processes already "
        f"running with this Redis (REDIS_PREFIX={prefix}) use {theirs.where}"
    )
    match mine.backend, theirs.backend:
        case "local", "local":
            fix = (
                "Local storage is one folder, which roles on other hosts cannot reach: set "
                f"{_S3} on every role, or run this role on that host with the same "
                "VIDSTREAM_DATA_DIR"
            )
        case "local", _:
            fix = f"Set VIDSTREAM_STORAGE=s3 and S3_BUCKET={theirs.id} here too, as on the others"
        case _, "local":
            fix = (
                "Local storage is one folder, which roles on other hosts cannot reach: set "
                f"{_S3} on every role, stopping those first"
            )
        case _:
            fix = f"Set S3_BUCKET={theirs.id} here, as on the others"
    return (
        f"{running}. {fix}. A separate deployment needs a REDIS_PREFIX of its own; a process "
        f"that died stops counting {LAPSE_S:g} s after its last renewal."
    )


class SharedStorage(Service):
    """This process's membership among the storage's users: joined at `start()` (or refused),
    renewed until `close()`, then left."""

    def __init__(self, redis: Redis, keys: Keys, place: Place, *, lapse_s: float = LAPSE_S) -> None:
        self.redis, self.keys, self.place, self.lapse_s = redis, keys, place, lapse_s
        self.member = f"{place.key}|{secrets.token_hex(6)}|{place.where}"
        self._join = scripts.register(redis, "storage_join")
        self._joined = False

    async def start(self) -> None:
        """Join, or raise `ConfigError` when a live process reaches other files."""
        if not self._joined:
            other = await self.join()
            if other is not None:
                raise ConfigError(refusal(self.place, other, self.keys.prefix))
            self._joined = True
            log.info("storage_joined", place=self.place.where)
        await super().start()

    async def join(self) -> User | None:
        """Join (or renew); return the live user whose place differs instead, if any."""
        other = await self._join(
            keys=[self.keys.storage_users],
            args=[self.member, self.place.key, int(self.lapse_s * 1000)],
        )
        return User.parse(str(other)) if other else None

    async def run(self) -> None:
        while not await pause(self.lapse_s / 3, self.stopping):
            try:
                other = await self.join()
            except RedisError as exc:  # the next renewal may land: the lapse has room for two
                log.warning("storage_renew_failed", error=str(exc))
                continue
            if other is not None:
                # Ours lapsed (a long outage) and a process reaching other files joined since:
                # nothing here can settle which one is wrong, so say it loudly, every renewal.
                log.error("storage_conflict", place=self.place.where, other=other.where)

    async def close(self) -> None:
        await super().close()
        if self._joined:
            self._joined = False
            with contextlib.suppress(RedisError, TimeoutError):
                async with asyncio.timeout(LEAVE_TIMEOUT_S):
                    await self.redis.zrem(self.keys.storage_users, self.member)
