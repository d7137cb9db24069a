"""Nothing lost: retries, dead letters and replay, cancellation of running work, long jobs."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.conftest import upload_job, watch
from tests.faults import FAKE_FFMPEG, Faults, wait_exit
from tests.media import Clip
from vidstream.actors.render import RenderWorker
from vidstream.actors.transcribe import TranscribeWorker
from vidstream.core.settings import Settings
from vidstream.runtime import Stack
from vidstream.state.keys import Keys

pytestmark = pytest.mark.slow  # real Whisper and FFmpeg, end to end


@pytest.fixture
async def stack(
    make_settings: Callable[..., Settings], redis: Redis, faults: Faults
) -> AsyncIterator[Stack]:
    settings = make_settings(
        ffmpeg=str(FAKE_FFMPEG), retry_base_delay_s=0.2, visibility_timeout_s=3.0
    )
    async with Stack(settings) as running:
        yield running


def gateway(stack: Stack) -> str:
    assert stack.gateway is not None
    return stack.gateway.url


def names(events: list[dict[str, Any]]) -> list[str]:
    return [f"{e['event']}:{e['stage']}" if e["stage"] else e["event"] for e in events]


async def test_a_transient_failure_succeeds_on_attempt_two(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip, faults: Faults
) -> None:
    """FFmpeg failing once makes the render run again after a backoff; the job completes."""
    faults.fail("render", "once")
    job = await upload_job(http, gateway(stack), clip.path, burn_subtitles="false")
    events = await watch(job)
    assert names(events)[-5:] == [
        "started:render", "retrying:render", "started:render", "progress:render", "completed",
    ]  # fmt: skip
    retry = next(e for e in events if e["event"] == "retrying")
    assert retry["error"]["code"] == "ffmpeg_failed" and retry["attempt"] == 1
    assert [e["attempts"] for e in events if e["event"] == "started"] == [1, 1, 2]
    assert names(events).count("started:transcribe") == 1  # the finished stage is not redone
    async with http.get(job["links"]["self"]) as r:
        final = await r.json()
    assert (final["status"], final["attempts"]) == ("completed", 2)


async def test_dead_letters_then_replay(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip, faults: Faults, redis: Redis,
    settings: Settings,
) -> None:  # fmt: skip
    """A stage that always fails ends `failed` in the dead letters; once fixed, a replay
    completes it without transcribing again."""
    faults.fail("render", "always")
    job = await upload_job(http, gateway(stack), clip.path, burn_subtitles="false")
    events = await watch(job)
    assert names(events).count("retrying:render") == 2  # JOB_MAX_ATTEMPTS = 3 tries
    assert events[-1]["event"] == "failed" and events[-1]["dead_letter"] is True
    assert events[-1]["error"]["code"] == "ffmpeg_failed"

    async with http.get(f"{gateway(stack)}/v1/dead-letters") as r:
        [letter] = (await r.json())["dead_letters"]
    assert (letter["job_id"], letter["stage"], letter["attempts"]) == (job["id"], "render", 3)
    assert (letter["job_status"], letter["error"]["code"]) == ("failed", "ffmpeg_failed")

    faults.clear("render")
    async with http.post(f"{gateway(stack)}/v1/jobs/{job['id']}/retry") as r:
        assert r.status == 202, await r.text()
        assert (await r.json())["status"] == "queued"
    # An id of the failed run would be answered with a reset (that run was replayed since):
    # read the whole history instead, and look at what came after the failure.
    history = await watch(job, since="0-0")
    replayed = history[[e["id"] for e in history].index(events[-1]["id"]) + 1 :]
    assert names(replayed)[:2] == ["queued", "started:render"]
    assert replayed[0]["replay"] is True and replayed[-1]["event"] == "completed"
    assert "started:transcribe" not in names(replayed)  # the transcript was kept
    async with http.get(f"{gateway(stack)}/v1/dead-letters") as r:
        assert (await r.json())["dead_letters"] == []
    async with http.post(f"{gateway(stack)}/v1/jobs/{job['id']}/retry") as r:
        assert r.status == 409  # completed now: nothing to retry
    videos = list((Path(settings.data_dir) / "storage" / "rendered").iterdir())
    assert [v.name.split("-")[0] for v in videos] == [job["id"]]  # one video, however many tries


async def test_invalid_media_is_not_retried(
    stack: Stack, http: aiohttp.ClientSession, text_file: Path
) -> None:
    """A permanent failure ends the job at once: no retry, not a dead letter."""
    job = await upload_job(http, gateway(stack), text_file)
    events = await watch(job)
    assert names(events) == ["queued", "started:transcribe", "failed:transcribe"]
    assert "dead_letter" not in events[-1]


async def test_cancelling_a_running_render_stops_ffmpeg(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip, faults: Faults, settings: Settings
) -> None:
    """DELETE during a render stops FFmpeg within 2 s, removes temp files, ends `cancelled`."""
    faults.delay("render", 60)
    ffmpeg = faults.announce("render")
    job = await upload_job(http, gateway(stack), clip.path)
    pid = await ffmpeg.pid()
    async with http.delete(job["links"]["self"]) as r:
        assert r.status == 200
    await wait_exit(pid, 2.0)
    events = await watch(job)
    assert names(events)[-1] == "cancelled:render"
    assert [e["event"] for e in events].count("cancelled") == 1
    worker = next(w for w in stack.workers if isinstance(w, RenderWorker))
    assert not (worker.tmp_root / job["id"]).exists()
    assert not list((Path(settings.data_dir) / "storage").glob("rendered/*"))


async def test_cancelling_a_running_transcription_stops_whisper(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip, faults: Faults
) -> None:
    """DELETE during a transcription stops the Whisper server and its decoder within 2 s;
    a fresh server takes the next job."""
    faults.delay("transcribe", 60)
    decoding = faults.announce("transcribe")
    worker = next(w for w in stack.workers if isinstance(w, TranscribeWorker))
    [server] = worker.pool.pids()
    job = await upload_job(http, gateway(stack), clip.path, burn_subtitles="false")
    decoder = await decoding.pid()  # Whisper is decoding the audio through the (slow) FFmpeg
    async with http.delete(job["links"]["self"]) as r:
        assert r.status == 200
    await wait_exit(server, 2.0)
    await wait_exit(decoder, 2.0)
    assert names(await watch(job))[-1] == "cancelled:transcribe"
    assert not (worker.tmp_root / job["id"]).exists()

    faults.clear("transcribe")
    following = await upload_job(http, gateway(stack), clip.path, burn_subtitles="false")
    assert (await watch(following))[-1]["event"] == "completed"


async def test_a_long_job_on_a_live_worker_is_not_taken_over(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip, faults: Faults, redis: Redis,
    prefix: str,
) -> None:  # fmt: skip
    """A render lasting more than two visibility timeouts stays with its live worker, while a
    second, idle render worker looks for work to reclaim."""
    assert stack.services is not None
    async with RenderWorker(stack.services) as idle:
        faults.delay("render", 7)  # the visibility timeout is 3 s
        job = await upload_job(http, gateway(stack), clip.path, burn_subtitles="false")
        events = await watch(job)
        assert idle.name.endswith("-render-1")
    assert events[-1]["event"] == "completed"
    assert names(events).count("started:render") == 1
    assert len(faults.pids("render")) == 1  # FFmpeg ran once
    keys = Keys(prefix)
    for stage in ("transcribe", "render"):
        pending = await redis.xpending(f"{prefix}:stream:{stage}", f"{prefix}:{stage}")
        assert pending["pending"] == 0
    assert await redis.zcard(keys.delayed) == 0


async def test_idempotency_key_returns_the_same_job(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip
) -> None:
    """The same Idempotency-Key returns the same job; reused with another body it is refused."""

    async def uploaded() -> str:
        size = os.path.getsize(clip.path)
        body = {"filename": "a.mp4", "content_type": "video/mp4", "size": size}
        async with http.post(f"{gateway(stack)}/v1/uploads", json=body) as r:
            ticket = await r.json()
        async with http.put(
            ticket["upload_url"],
            data=io.BytesIO(clip.path.read_bytes()),
            headers=ticket["headers"],
        ) as r:
            assert r.status == 200
        return str(ticket["key"])

    request = {"source": {"key": await uploaded()}, "burn_subtitles": False}
    headers = {"Idempotency-Key": "order-42"}
    async with http.post(f"{gateway(stack)}/v1/jobs", json=request, headers=headers) as r:
        first = await r.json()
        assert r.status == 202
    async with http.post(f"{gateway(stack)}/v1/jobs", json=request, headers=headers) as r:
        again = await r.json()
        assert r.status == 200
    assert again["id"] == first["id"] and again["ws_token"] == first["ws_token"]
    other = {**request, "burn_subtitles": True}
    async with http.post(f"{gateway(stack)}/v1/jobs", json=other, headers=headers) as r:
        assert r.status == 422
        assert (await r.json())["error"]["code"] == "idempotency_key_reused"
    # Another key is another job (of another upload: an upload makes one job).
    second = {**request, "source": {"key": await uploaded()}}
    async with http.post(
        f"{gateway(stack)}/v1/jobs", json=second, headers={"Idempotency-Key": "order-43"}
    ) as r:
        assert (await r.json())["id"] != first["id"]
    assert (await watch(first))[-1]["event"] == "completed"


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vidstream", *args, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_dlq_cli_lists_and_replays(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    clip: Clip, faults: Faults, prefix: str,
) -> None:  # fmt: skip
    """`vidstream dlq list` shows a dead-lettered job; `vidstream dlq replay` completes it."""
    settings = make_settings(ffmpeg=str(FAKE_FFMPEG), job_max_attempts=1)
    env = {"REDIS_URL": settings.redis_url, "REDIS_PREFIX": prefix, "LOG_FORMAT": "json"}
    async with Stack(settings) as stack:
        faults.fail("render", "always")
        job = await upload_job(http, gateway(stack), clip.path, burn_subtitles="false")
        failed = await watch(job)
        assert failed[-1]["event"] == "failed"
        code, out = await run_cli("dlq", "list", env=env)
        assert code == 0
        assert job["id"] in out and "ffmpeg_failed" in out and "failed" in out
        faults.clear("render")
        code, out = await run_cli("dlq", "replay", job["id"], env=env)
        assert (code, "queued again from its render stage" in out) == (0, True), out
        assert (await watch(job, since="0-0"))[-1]["event"] == "completed"
        code, out = await run_cli("dlq", "replay", job["id"], env=env)
        assert code == 1 and "completed, not failed" in out
        code, out = await run_cli("dlq", "list", env=env)
        assert "no dead letters" in out


async def test_a_restarted_worker_first_takes_up_its_own_entries(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    clip: Clip, prefix: str,
) -> None:  # fmt: skip
    """The entry a dead worker had read comes back to the worker restarted in its slot at
    once, long before the visibility timeout would let another worker reclaim it."""
    settings = make_settings(visibility_timeout_s=600.0)
    async with Stack(settings, ("gateway", "notifier", "render")) as stack:
        job = await upload_job(http, gateway(stack), clip.path, burn_subtitles="false")
        dead = f"{socket.gethostname()}-transcribe-0"
        stream, group = f"{prefix}:stream:transcribe", f"{prefix}:transcribe"
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
        read = await redis.xreadgroup(group, dead, {stream: ">"}, count=1)
        assert read[0][1][0][1]["job_id"] == job["id"]  # the dead worker had taken it
        assert stack.services is not None
        async with TranscribeWorker(stack.services) as restarted:
            assert restarted.name == dead
            events = await watch(job, timeout_s=60)
    assert events[-1]["event"] == "completed"
