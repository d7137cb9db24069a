"""Upload tickets: which tenant was given an upload key, for what file, and whether a job used it.

`POST /v1/uploads` issues a ticket with the key; a job may name that key as its source only for
the same tenant and only once (`take`). A ticket lives as long as its link plus a margin for the
job to be created after the upload ends; an upload no job took is then abandoned.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import cast

from redis.asyncio import Redis

from vidstream.state import scripts
from vidstream.state.keys import Keys

MARGIN_S = 3600  # a job may be created this long after the upload link expired


@dataclass(frozen=True, slots=True)
class Ticket:
    key: str
    tenant: str
    filename: str  # the client's file name, cleaned: names the downloads
    size: int
    content_type: str


class Tickets:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis, self.keys = redis, keys
        self._take = scripts.register(redis, "ticket_take")
        self._first_put = scripts.register(redis, "ticket_first_put")

    async def issue(self, ticket: Ticket, link_ttl_s: int, margin_s: int = MARGIN_S) -> None:
        """Record the ticket before any byte is uploaded to its key: what is uploaded is owned
        from the start, and deleted by retention if no job takes it within the link's life and
        `margin_s`."""
        key = self.keys.upload(ticket.key)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "ticket", json.dumps(asdict(ticket)))
            pipe.expire(key, link_ttl_s + margin_s)
            # If no job takes it by then, retention deletes what was uploaded.
            expires = time.time() + link_ttl_s + margin_s
            pipe.zadd(self.keys.abandoned_uploads, {ticket.key: expires})
            await pipe.execute()

    async def extend(self, key: str, ttl_s: int) -> None:
        """Keep an untaken ticket `ttl_s` longer from now (an upload still streaming in)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.expire(self.keys.upload(key), ttl_s)
            # XX: not back in the index once a job took it.
            pipe.zadd(self.keys.abandoned_uploads, {key: time.time() + ttl_s}, xx=True)
            await pipe.execute()

    async def first_put(self, key: str) -> bool:
        """Whether this is the first upload to `key`'s link: a link uploads once."""
        return bool(await self._first_put(keys=[self.keys.upload(key)]))

    async def take(self, key: str, tenant: str, job_id: str) -> Ticket | None:
        """The ticket of `key` if `tenant` was given it and no job used it, now used by
        `job_id`; else None (whoever asks learns nothing about other tenants' keys)."""
        raw = await self._take(
            keys=[self.keys.upload(key), self.keys.abandoned_uploads], args=[tenant, job_id, key]
        )
        return Ticket(**json.loads(cast(str, raw))) if raw else None

    async def give_back(self, key: str, job_id: str) -> None:
        """The job `job_id` was not created after all: the ticket may be used again."""
        ticket = self.keys.upload(key)
        if await self.redis.hget(ticket, "job") == job_id:
            await self.redis.hdel(ticket, "job")
            ttl = await self.redis.ttl(ticket)
            if ttl > 0:
                await self.redis.zadd(self.keys.abandoned_uploads, {key: time.time() + ttl})

    async def give_back_all(self, keys: Iterable[str], job_id: str) -> None:
        """`give_back` each of `keys`."""
        await asyncio.gather(*(self.give_back(key, job_id) for key in keys))
