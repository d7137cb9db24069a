"""Stable worker names: each worker process leases the lowest free slot `host-role-N` in Redis.

A worker restarted after a crash gets its old name back once the dead process's lease has run
out, so it first takes up the stream entries still pending under that name and removes the
temp files the dead process left. The lease is refreshed while the worker runs; a process that
dies without releasing it frees the slot after `ttl_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket

from redis.asyncio import Redis
from redis.exceptions import RedisError

from vidstream import logs
from vidstream.keys import Keys
from vidstream.tasks import cancel_and_wait

MAX_SLOTS = 1024

# Refresh the lease only while we still hold it; release only our own.
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def slot_name(host: str, role: str, index: int) -> str:
    return f"{host}-{role}-{index}"


class SlotLease:
    def __init__(self, redis: Redis, keys: Keys, role: str, ttl_s: int = 30) -> None:
        self.redis, self.keys, self.role, self.ttl_s = redis, keys, role, ttl_s
        self.host = socket.gethostname()
        self.index: int | None = None
        self._token = secrets.token_hex(8)
        self._refresher: asyncio.Task[None] | None = None
        self._refresh = redis.register_script(_REFRESH)
        self._release = redis.register_script(_RELEASE)
        self.log = logs.get(role=role)

    @property
    def name(self) -> str:
        assert self.index is not None, "acquire() first"
        return slot_name(self.host, self.role, self.index)

    async def acquire(self) -> str:
        """Lease the lowest free slot and keep it leased; return the worker name."""
        if self.index is None:
            for index in range(MAX_SLOTS):
                key = self.keys.slot(self.host, self.role, index)
                if await self.redis.set(key, self._token, nx=True, ex=self.ttl_s):
                    self.index = index
                    break
            else:
                raise RuntimeError(f"all {MAX_SLOTS} {self.role} slots on {self.host} are taken")
            self._refresher = asyncio.create_task(self._keep(), name=f"{self.name}-lease")
        return self.name

    async def held_by_others(self) -> set[str]:
        """Names of this host's slots of this role that a live process holds, ours excluded."""
        pattern = self.keys.slot(self.host, self.role, "*")
        names = set()
        async for key in self.redis.scan_iter(match=pattern, count=200):
            index = int(str(key).rsplit(":", 1)[-1])
            if index != self.index:
                names.add(slot_name(self.host, self.role, index))
        return names

    async def _keep(self) -> None:
        assert self.index is not None
        key = self.keys.slot(self.host, self.role, self.index)
        while True:
            await asyncio.sleep(self.ttl_s / 3)  # a refresh period, not synchronisation
            try:
                if not await self._refresh(keys=[key], args=[self._token, self.ttl_s]):
                    # Lost (Redis restarted without persistence): take it again if free.
                    await self.redis.set(key, self._token, nx=True, ex=self.ttl_s)
            except RedisError as exc:
                self.log.warning("slot_refresh_failed", slot=self.name, error=str(exc))

    async def release(self) -> None:
        """Stop refreshing and free the slot; safe to call twice."""
        if self._refresher is not None:
            await cancel_and_wait([self._refresher])
            self._refresher = None
        if self.index is not None:
            key = self.keys.slot(self.host, self.role, self.index)
            with contextlib.suppress(RedisError):
                await self._release(keys=[key], args=[self._token])
