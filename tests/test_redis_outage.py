"""Redis restarted under a running stack: roles wait and carry on; the API answers 503 meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.conftest import upload_job, watch
from tests.faults import FAKE_FFMPEG, Faults, OwnRedis
from tests.faults import own_redis as own_redis
from tests.media import Clip
from vidstream.core.settings import Settings
from vidstream.runtime import Stack

pytestmark = pytest.mark.slow  # real Whisper and FFmpeg, end to end


async def test_redis_restart_under_a_running_job(
    make_settings: Callable[..., Settings], own_redis: OwnRedis, http: aiohttp.ClientSession,
    clip: Clip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis: Redis,
) -> None:  # fmt: skip
    """Redis restarts while a job renders: the gateway answers 503, no role stops, and the job
    completes once Redis is back."""
    faults = Faults(tmp_path / "faults")
    for name, value in faults.env.items():
        monkeypatch.setenv(name, value)
    settings = make_settings(
        redis_url=own_redis.url, ffmpeg=str(FAKE_FFMPEG), redis_timeout_s=1.0,
        visibility_timeout_s=10.0,
    )  # fmt: skip
    async with Stack(settings) as stack:
        assert stack.gateway is not None
        faults.delay("render", 3)
        rendering = faults.announce("render")
        job = await upload_job(http, stack.gateway.url, clip.path, burn_subtitles="false")
        await rendering.pid()

        await own_redis.stop()
        async with http.get(job["links"]["self"]) as r:
            assert r.status == 503
            assert (await r.json())["error"]["code"] == "unavailable"
        async with http.get(f"{stack.gateway.url}/readyz") as r:
            assert r.status == 503
        await own_redis.start()

        events = await watch(job, timeout_s=60)
        assert events[-1]["event"] == "completed"
        assert [e["event"] for e in events].count("completed") == 1
        async with http.get(job["links"]["self"]) as r:
            assert (await r.json())["status"] == "completed"
        assert all(w.alive for w in stack.workers)
