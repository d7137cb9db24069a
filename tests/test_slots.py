"""Workers get stable names, so a restarted worker finds its own leftovers and pending entries."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis

from vidstream.actors.render import RenderWorker
from vidstream.actors.slots import Holder, SlotLease
from vidstream.core.settings import Settings
from vidstream.core.signing import Signer
from vidstream.services import Services
from vidstream.state.keys import Keys
from vidstream.storage import open_store

HOST = socket.gethostname()


async def test_slots_are_the_lowest_free_and_come_back(redis: Redis, prefix: str) -> None:
    """Two live workers get slots 0 and 1; after the first stops, a new one gets slot 0 again."""
    keys = Keys(prefix)
    first, second = SlotLease(redis, keys, "render"), SlotLease(redis, keys, "render")
    assert await first.acquire() == f"{HOST}-render-0"
    assert await second.acquire() == f"{HOST}-render-1"
    assert await second.live_slots() == {f"{HOST}-render-0"}
    await first.release()
    await first.release()  # twice is fine
    again = SlotLease(redis, keys, "render")
    assert await again.acquire() == f"{HOST}-render-0"
    await again.release()
    await second.release()


async def test_a_lease_expires_unless_its_process_refreshes_it(redis: Redis, prefix: str) -> None:
    """A slot carries a TTL, so a process killed with SIGKILL frees it within `ttl_s`."""
    keys = Keys(prefix)
    lease = SlotLease(redis, keys, "render", ttl_s=30)
    await lease.acquire()
    key = keys.slot(HOST, "render", 0)
    assert 0 < await redis.pttl(key) <= 30_000
    assert await redis.get(key) == lease._token
    await lease.release()
    assert await redis.exists(key) == 0


async def test_a_starting_worker_removes_leftovers_of_dead_slots(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """Temp files of its own slot and of unheld slots go; a live slot's files stay."""
    settings = make_settings()
    tmp = settings.data_dir.resolve() / "tmp"
    for name in (f"{HOST}-render-0", f"{HOST}-render-1", f"{HOST}-render-2"):
        (tmp / name / "job").mkdir(parents=True)
        (tmp / name / "job" / "source.mp4").write_bytes(b"x" * 100)
    keys = Keys(settings.redis_prefix)
    live = SlotLease(redis, keys, "render")
    await live.acquire()  # slot 0: another live process
    store = open_store(settings, Signer(b"s"))
    async with store:
        services = Services.build(settings, redis, store, Signer(b"s"))
        async with RenderWorker(services) as worker:
            assert worker.name == f"{HOST}-render-1"
            assert (tmp / f"{HOST}-render-0" / "job" / "source.mp4").exists()
            assert not (tmp / f"{HOST}-render-1" / "job").exists()
            assert not (tmp / f"{HOST}-render-2").exists()
    await live.release()


async def _dead_holder() -> str:
    """The lease token a process on this machine wrote before it was killed (SIGKILL)."""
    proc = await asyncio.create_subprocess_exec("sleep", "60")
    started = Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[19]
    me = Holder.me()
    token = Holder(me.boot, me.pidns, proc.pid, started, "deadbeef").token()
    proc.kill()
    await proc.wait()
    return token


async def test_a_restarted_worker_gets_its_slot_back_at_once(redis: Redis, prefix: str) -> None:
    """systemd restarts a killed worker within seconds, while its lease still runs: the new
    process sees that the holder is gone and takes the same name, not the next one."""
    keys = Keys(prefix)
    await redis.set(keys.slot(HOST, "render", 0), await _dead_holder(), ex=30)
    restarted = SlotLease(redis, keys, "render")
    assert await restarted.acquire() == f"{HOST}-render-0"
    await restarted.release()


async def test_a_live_holder_keeps_its_slot(redis: Redis, prefix: str) -> None:
    """A slot held by a live process, or by a process this machine cannot see (another host
    with the same name, another container, an older version's lease), is never taken over."""
    keys = Keys(prefix)
    me = Holder.me()
    unseen = [
        me.token(),  # alive: this very process
        Holder("another-boot", me.pidns, 1, "1", "x").token(),  # another machine
        Holder(me.boot, "pid:[1]", 999_999, "1", "x").token(),  # another PID namespace
        "0123456789abcdef",  # an older version's token
    ]
    for index, token in enumerate(unseen):
        await redis.set(keys.slot(HOST, "render", index), token, ex=30)
    newcomer = SlotLease(redis, keys, "render")
    assert await newcomer.acquire() == f"{HOST}-render-{len(unseen)}"
    await newcomer.release()


async def test_a_dead_slots_files_go_whoever_starts_next(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """A transcribe worker killed mid-job leaves its downloaded source; the next worker to start
    on the host, a render worker here, removes it, while its own role's live slots keep theirs."""
    settings = make_settings()
    keys = Keys(settings.redis_prefix)
    tmp = settings.data_dir.resolve() / "tmp"
    dead, live = f"{HOST}-transcribe-0", f"{HOST}-transcribe-1"
    for name in (dead, live):
        (tmp / name / "job").mkdir(parents=True)
        (tmp / name / "job" / "source.mp4").write_bytes(b"x" * 100)
    await redis.set(keys.slot(HOST, "transcribe", 0), await _dead_holder(), ex=30)
    await redis.set(keys.slot(HOST, "transcribe", 1), Holder.me().token(), ex=30)
    store = open_store(settings, Signer(b"s"))
    async with store:
        services = Services.build(settings, redis, store, Signer(b"s"))
        async with RenderWorker(services) as worker:
            assert worker.name == f"{HOST}-render-0"
            assert not (tmp / dead).exists()
            assert (tmp / live / "job" / "source.mp4").exists()


async def test_a_live_worker_whose_lease_redis_lost_keeps_its_name_and_files(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """Redis lost a live worker's lease (a restart without its data, a stall past the lease):
    a worker starting meanwhile takes neither its name nor its files, which its folder shows
    to be a running process's."""
    settings = make_settings()
    keys = Keys(settings.redis_prefix)
    tmp = settings.data_dir.resolve() / "tmp"
    live = SlotLease(redis, keys, "render", tmp_base=tmp)
    name = await live.acquire()
    (tmp / name / "job").mkdir(parents=True)
    (tmp / name / "job" / "output.mp4").write_bytes(b"x" * 100)
    await redis.delete(keys.slot(HOST, "render", 0))  # lost
    store = open_store(settings, Signer(b"s"))
    async with store:
        services = Services.build(settings, redis, store, Signer(b"s"))
        async with RenderWorker(services) as worker:
            assert worker.name == f"{HOST}-render-1"
            assert (tmp / name / "job" / "output.mp4").exists()
    await live.release()
