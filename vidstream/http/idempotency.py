"""`Idempotency-Key` on `POST /v1/jobs`: the same key within 24 h returns the same job.

The key is reserved before any work (SET NX), so two concurrent requests with one key create
one job, and the reservation is kept alive while the request runs, however long its upload
streams (a resend meanwhile gets `409`). The step that creates the job binds the key to it
(`Binding`, written by the creating script itself), so no crash between the two can let a resend
make a second job. A request that created nothing frees the key, so a client can correct its
request and send it again with the same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from vidstream.core.tasks import kept_alive
from vidstream.http.errors import ApiError
from vidstream.state import scripts
from vidstream.state.budget import cleanup
from vidstream.state.jobstore import Binding
from vidstream.state.keys import Keys

TTL_S = 24 * 3600
# A reservation lapses this long after its gateway stopped renewing it (it died mid-request).
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
        # The reservation names this request (a nonce), not only the request's shape: two
        # requests with one key (the first's reservation lapsed) never renew, free or bind the
        # other's.
        nonce = secrets.token_hex(8)
        self.binding = Binding(self.key, fingerprint, TTL_S, nonce)
        self._pending = f"{_PENDING} {nonce} {fingerprint}"
        self._renew = scripts.register(redis, "if_held_expire")
        self._release = scripts.register(redis, "if_held_delete")

    async def reserve(self) -> str | None:
        """Reserve the key; return the id of the job an earlier request made with it, if any."""
        # A short reservation, kept alive while the request runs (`held`): if this gateway dies
        # before the job is made, the key frees itself soon.
        if await self.redis.set(self.key, self._pending, nx=True, ex=PENDING_S):
            return None
        held = str(await self.redis.get(self.key) or "")
        job_id, _, fingerprint = held.partition(" ")
        if job_id == _PENDING:  # `pending <nonce> <fingerprint>`
            fingerprint = fingerprint.partition(" ")[2]
        if fingerprint != self.fingerprint:
            raise ApiError(422, "idempotency_key_reused",
                           "This Idempotency-Key was used with a different request.")  # fmt: skip
        if job_id == _PENDING:
            raise ApiError(409, "conflict", "A request with this Idempotency-Key is in progress.")
        return job_id

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Keep the reservation from lapsing while the block runs (an upload may stream for an
        hour); free it if the block fails before a job was bound to the key."""

        async def renew() -> None:
            await self._renew(keys=[self.key], args=[self._pending, PENDING_S])

        try:
            async with kept_alive(renew, PENDING_S / 3, "idempotency-reservation"):
                yield
        except BaseException:
            await asyncio.shield(cleanup(self._release(keys=[self.key], args=[self._pending])))
            raise
