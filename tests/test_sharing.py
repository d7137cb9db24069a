"""Every process of a deployment reaches the same files: one started with other storage (local
storage on another host, the default) refuses to start and says what to set."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from vidstream.core.errors import ConfigError
from vidstream.core.settings import Settings
from vidstream.core.signing import Signer
from vidstream.runtime import Stack
from vidstream.state.keys import Keys
from vidstream.state.sharing import SharedStorage, User, refusal
from vidstream.storage import LocalStore, Place

HERE = Place("local", "aaaa", "local storage /srv/data/storage on host-b")
THERE = Place("local", "bbbb", "local storage /srv/data/storage on host-a")
BUCKET = Place("s3", "media", "s3://media at https://r2.example")


async def place_of(root: Path) -> Place:
    async with LocalStore(root, Signer(b"s"), "http://gateway") as store:
        return await store.place()


async def test_a_local_folder_is_known_by_the_id_written_in_it(tmp_path: Path) -> None:
    """Stores on one folder (processes sharing a data dir, by whatever path) reach the same
    place, also after a restart; a folder elsewhere (another host's) is another place."""
    first = await place_of(tmp_path / "data" / "storage")
    (tmp_path / "link").symlink_to(tmp_path / "data")
    again = await place_of(tmp_path / "link" / "storage")
    other = await place_of(tmp_path / "elsewhere" / "storage")
    assert first.key == again.key != other.key
    assert first.backend == "local" and str(tmp_path / "data" / "storage") in first.where


def test_each_refusal_says_what_to_set() -> None:
    """The message names both places and the settings that fix it, for each pairing."""
    member = lambda place: User.parse(f"{place.key}|0123|{place.where}")  # noqa: E731
    local_local = refusal(HERE, member(THERE), "vs")
    assert "host-b" in local_local and "host-a" in local_local and "REDIS_PREFIX=vs" in local_local
    assert "VIDSTREAM_STORAGE=s3 with S3_BUCKET" in local_local
    assert "same VIDSTREAM_DATA_DIR" in local_local
    assert "VIDSTREAM_STORAGE=s3 and S3_BUCKET=media" in refusal(HERE, member(BUCKET), "vs")
    assert "on every role, stopping those first" in refusal(BUCKET, member(THERE), "vs")
    other_bucket = Place("s3", "other", "s3://other at https://r2.example")
    assert "Set S3_BUCKET=media here" in refusal(other_bucket, member(BUCKET), "vs")


async def test_a_process_reaching_other_files_refuses_until_the_others_stop(
    redis: Redis, prefix: str
) -> None:
    """Beside a running process, one on another host's local storage refuses to start and one
    on the same folder starts; once both have stopped, the other host's may start."""
    keys = Keys(prefix)
    async with SharedStorage(redis, keys, THERE), SharedStorage(redis, keys, THERE):
        with pytest.raises(ConfigError) as refused:
            await SharedStorage(redis, keys, HERE).__aenter__()
        assert "VIDSTREAM_STORAGE=s3" in str(refused.value)
        assert "host-a" in str(refused.value)
    async with SharedStorage(redis, keys, HERE) as joined:
        assert await joined.join() is None  # renewing is joining again


async def test_a_process_that_died_stops_counting_once_it_lapsed(redis: Redis, prefix: str) -> None:
    """A process killed without leaving does not block a move to other storage for long: its
    membership lapses (here, one whose last renewal is long past)."""
    keys = Keys(prefix)
    dead = f"{THERE.key}|dead|{THERE.where}"
    await redis.zadd(keys.storage_users, {dead: (time.time() - 60) * 1000})
    async with SharedStorage(redis, keys, HERE) as joined:
        assert await redis.zrange(keys.storage_users, 0, -1) == [joined.member]


async def test_a_worker_on_another_hosts_local_storage_refuses_to_start(
    make_settings: Callable[..., Settings], redis: Redis, tmp_path: Path
) -> None:
    """With a gateway running on local storage, a worker whose data dir is another (as on
    another host) stops at start with a ConfigError naming VIDSTREAM_STORAGE=s3; one sharing
    the gateway's data dir (the same machine) starts."""
    settings = make_settings()
    async with Stack(settings, ("gateway",)):
        elsewhere = settings.replace(data_dir=tmp_path / "another-host")
        with pytest.raises(ConfigError, match="VIDSTREAM_STORAGE=s3"):
            await Stack(elsewhere, ("render",)).__aenter__()
        async with Stack(settings, ("render",)) as beside:
            assert beside.workers
