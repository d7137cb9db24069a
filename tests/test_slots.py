"""Workers get stable names, so a restarted worker finds its own leftovers and pending entries."""

from __future__ import annotations

import socket
from collections.abc import Callable

from redis.asyncio import Redis

from vidstream.actors.render import RenderWorker
from vidstream.actors.slots import SlotLease
from vidstream.keys import Keys
from vidstream.services import Services
from vidstream.settings import Settings
from vidstream.signing import Signer
from vidstream.storage import open_store

HOST = socket.gethostname()


async def test_slots_are_the_lowest_free_and_come_back(redis: Redis, prefix: str) -> None:
    """Two live workers get slots 0 and 1; after the first stops, a new one gets slot 0 again."""
    keys = Keys(prefix)
    first, second = SlotLease(redis, keys, "render"), SlotLease(redis, keys, "render")
    assert await first.acquire() == f"{HOST}-render-0"
    assert await second.acquire() == f"{HOST}-render-1"
    assert await second.held_by_others() == {f"{HOST}-render-0"}
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
