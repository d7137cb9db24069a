"""Stable worker names: each worker process leases the lowest free slot `host-role-N` in Redis.

A worker restarted after a crash gets its old name back, so it first takes up the stream entries
still pending under that name and removes the temp files the dead process left. The lease is
refreshed while the worker runs and carries a TTL, so a slot whose process died frees itself;
but systemd restarts a crashed worker within seconds, long before that. So a lease names its
holder (boot, PID namespace, PID and the process's start time): a process starting on the same
machine sees that the holder is gone and takes the slot over at once, and any worker starting on
the host removes the temp files of every slot whose process is gone, whatever its role.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from vidstream.core import logs
from vidstream.core.tasks import cancel_and_wait
from vidstream.state import scripts
from vidstream.state.keys import Keys

MAX_SLOTS = 1024


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (`/proc/PID/stat` field 22), which
    tells a PID reused by another process from the one that held it; "" if none runs."""
    stat = _read(f"/proc/{pid}/stat")
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a slot, as written in its lease: enough to tell, on the same machine and in the
    same PID namespace, whether that process still runs."""

    boot: str
    pidns: str
    pid: int
    started: str
    nonce: str

    @classmethod
    def me(cls) -> Holder:
        boot = _read("/proc/sys/kernel/random/boot_id")
        pid = os.getpid()
        return cls(boot, _pid_namespace(), pid, _start_time(pid), secrets.token_hex(6))

    def token(self) -> str:
        return "|".join((self.boot, self.pidns, str(self.pid), self.started, self.nonce))

    @classmethod
    def parse(cls, token: str) -> Holder | None:
        parts = token.split("|")
        if len(parts) != 5 or not parts[2].isdigit():
            return None  # a lease written by an older version: wait for its TTL
        boot, pidns, pid, started, nonce = parts
        return cls(boot, pidns, int(pid), started, nonce)

    def gone(self, me: Holder) -> bool:
        """Whether this holder's process is known to be gone. Only a process of the same boot
        and PID namespace can tell (another machine or container with the same host name
        cannot); an unknown start time never counts as gone."""
        if not (self.boot and self.pidns and self.started):
            return False
        if (self.boot, self.pidns) != (me.boot, me.pidns):
            return False
        return _start_time(self.pid) != self.started


def slot_name(host: str, role: str, index: int) -> str:
    return f"{host}-{role}-{index}"


class SlotLease:
    def __init__(
        self, redis: Redis, keys: Keys, role: str, ttl_s: int = 30, tmp_base: Path | None = None
    ) -> None:
        self.redis, self.keys, self.role, self.ttl_s = redis, keys, role, ttl_s
        # Where the workers of this host keep a folder per slot, each with a `.holder` file
        # naming its process: what this machine knows of its slots whatever Redis lost.
        self.tmp_base = tmp_base
        self.host = socket.gethostname()
        self.index: int | None = None
        self.holder = Holder.me()
        self._token = self.holder.token()
        self._refresher: asyncio.Task[None] | None = None
        self._refresh = scripts.register(redis, "if_held_expire")
        self._release = scripts.register(redis, "if_held_delete")
        self._take_over = scripts.register(redis, "slot_take_over")
        self.log = logs.get(role=role)

    @property
    def name(self) -> str:
        assert self.index is not None, "acquire() first"
        return slot_name(self.host, self.role, self.index)

    async def acquire(self) -> str:
        """Lease the lowest slot that is free or whose process is gone, and keep it leased;
        return the worker name."""
        if self.index is None:
            for index in range(MAX_SLOTS):
                if await self._try(index):
                    self.index = index
                    break
            else:
                raise RuntimeError(f"all {MAX_SLOTS} {self.role} slots on {self.host} are taken")
            self._refresher = asyncio.create_task(self._keep(), name=f"{self.name}-lease")
        return self.name

    async def _try(self, index: int) -> bool:
        key = self.keys.slot(self.host, self.role, index)
        # A live process of this machine whose lease Redis lost (a restart without its data, a
        # stall past the lease) keeps its name: its folder says it still runs.
        if await self._alive_here(slot_name(self.host, self.role, index)):
            return False
        if await self.redis.set(key, self._token, nx=True, ex=self.ttl_s):
            await self._mark_mine(index)
            return True
        held = await self.redis.get(key)
        holder = Holder.parse(str(held)) if held else None
        if holder is None or not holder.gone(self.holder):
            return False
        taken = await self._take_over(keys=[key], args=[str(held), self._token, self.ttl_s])
        if taken:
            name = slot_name(self.host, self.role, index)
            self.log.info("slot_taken_over", slot=name, dead_pid=holder.pid)
            await self._mark_mine(index)
        return bool(taken)

    def _holder_file(self, name: str) -> Path | None:
        return None if self.tmp_base is None else self.tmp_base / name / ".holder"

    async def _alive_here(self, name: str) -> bool:
        """Whether this machine's folder of slot `name` names a process that still runs."""
        path = self._holder_file(name)
        if path is None:
            return False
        token = await asyncio.to_thread(_read, str(path))
        holder = Holder.parse(token) if token else None
        return (
            holder is not None
            and holder.nonce != self.holder.nonce
            and not holder.gone(self.holder)
        )

    async def _mark_mine(self, index: int) -> None:
        path = self._holder_file(slot_name(self.host, self.role, index))
        if path is not None:

            def write() -> None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(self._token)

            await asyncio.to_thread(write)

    async def leftovers(self) -> list[Path]:
        """This host's slot folders (of every role) whose process is gone: by the `.holder`
        file each keeps, or, for a folder without one, by its lease in Redis. Never this
        lease's own folder, nor a live process's (whatever Redis lost)."""
        if self.tmp_base is None or not self.tmp_base.is_dir():
            return []
        live = await self.live_slots()
        mine, own = f"{self.host}-", self.name if self.index is not None else None
        found = []
        for path in await asyncio.to_thread(list, self.tmp_base.iterdir()):
            if not path.name.startswith(mine) or path.name == own:
                continue
            token = await asyncio.to_thread(_read, str(path / ".holder"))
            holder = Holder.parse(token) if token else None
            if holder is not None:
                if holder.gone(self.holder):
                    found.append(path)
            elif path.name not in live:
                found.append(path)
        return found

    async def live_slots(self) -> set[str]:
        """Names of this host's slots (of every role) that a live process holds, ours
        excluded: the temp directories of all others may go."""
        pattern = self.keys.slot(self.host, "*", "*")
        names = set()
        async for key in self.redis.scan_iter(match=pattern, count=200):
            role, index = str(key).rsplit(":", 2)[-2:]
            if role == self.role and index == str(self.index):
                continue
            held = await self.redis.get(key)
            holder = Holder.parse(str(held)) if held else None
            if held is not None and (holder is None or not holder.gone(self.holder)):
                names.add(slot_name(self.host, role, int(index)))
        return names

    async def _keep(self) -> None:
        assert self.index is not None
        key = self.keys.slot(self.host, self.role, self.index)
        while True:
            await asyncio.sleep(self.ttl_s / 3)  # a refresh period, not synchronisation
            try:
                # Lost (Redis restarted without persistence): take it again if free. If another
                # process holds our name, it did not see our folder (another machine with this
                # host name?): say so loudly, nothing can fix it here.
                held = await self._refresh(keys=[key], args=[self._token, self.ttl_s])
                if not held and not await self.redis.set(key, self._token, nx=True, ex=self.ttl_s):
                    self.log.error("slot_held_by_another", slot=self.name)
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
