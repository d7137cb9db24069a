"""`Idempotency-Key` on `POST /v1/jobs`: the same key within 24 h returns the same job.

The key is reserved before any work (SET NX), so two concurrent requests with one key create
one job; it is then bound to the job created, or freed if the request failed, so a client can
correct its request and send it again with the same key.
"""

from __future__ import annotations

import hashlib
import re

from redis.asyncio import Redis

from vidstream.http.errors import ApiError
from vidstream.keys import Keys

TTL_S = 24 * 3600
PENDING_S = 60
_VALID = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
_PENDING = "pending"


class IdempotencyKey:
    def __init__(
        self, redis: Redis, keys: Keys, tenant: str, header: str, fingerprint: str
    ) -> None:
        if not _VALID.match(header):
            raise ApiError(
                400, "invalid_request", "Idempotency-Key must be 1-255 printable characters"
            )
        digest = hashlib.sha256(header.encode()).hexdigest()
        self.redis, self.key, self.fingerprint = (
            redis,
            keys.idempotency(tenant, digest),
            fingerprint,
        )
        self._reserved = False

    async def reserve(self) -> str | None:
        """Reserve the key; return the id of the job an earlier request made with it, if any."""
        # A short reservation: if this gateway dies before binding, the key frees itself soon.
        if await self.redis.set(self.key, f"{_PENDING} {self.fingerprint}", nx=True, ex=PENDING_S):
            self._reserved = True
            return None
        held = str(await self.redis.get(self.key) or "")
        job_id, _, fingerprint = held.partition(" ")
        if fingerprint != self.fingerprint:
            raise ApiError(422, "idempotency_key_reused",
                           "This Idempotency-Key was used with a different request.")  # fmt: skip
        if job_id == _PENDING:
            raise ApiError(409, "conflict", "A request with this Idempotency-Key is in progress.")
        return job_id

    async def bind(self, job_id: str, job_key: str) -> None:
        """Bind the key to the job (whose hash is at `job_key`), which names it in turn, so
        the entry is removed with the job."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.key, f"{job_id} {self.fingerprint}", ex=TTL_S)
            pipe.hset(job_key, "idempotency", self.key)
            await pipe.execute()
        self._reserved = False

    async def release(self) -> None:
        """Free the key after a request that created nothing."""
        if self._reserved:
            await self.redis.delete(self.key)
            self._reserved = False
