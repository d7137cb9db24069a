"""Fan-out end to end, with real Whisper and FFmpeg: a long video's stages cut into pieces that
several workers take at once, joined into one transcript and one video; a worker killed
mid-piece and a cancel."""

from __future__ import annotations

import asyncio
import difflib
import json
import re
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from redis.asyncio import Redis

from tests.conftest import fetch, upload_job, watch
from tests.faults import FAKE_FFMPEG, Faults, wait_exit
from tests.media import (
    Clip,
    duration_of,
    parse_cues,
    scheduled_clip,
    video_frames,
    words_of,
)
from tests.test_chaos import Cluster
from tests.test_compose import ocr
from tests.test_operations import eventually
from vidstream.actors.worker import Worker
from vidstream.core.settings import Settings
from vidstream.media.cuts import frame_cuts
from vidstream.runtime import Stack
from vidstream.state.keys import Keys

pytestmark = pytest.mark.slow

LONG_S = 720.0  # 12 minutes
PIECE_S = 180.0  # four pieces a stage
SEAMS = (180.0, 360.0, 540.0)  # where the source's cuts fall (the picture's, exactly)
KEYFRAME_EVERY_S = 10.0


def _starts(duration: float, every: float, seams: tuple[float, ...]) -> list[float]:
    """A sentence every `every` seconds, and one spoken across each seam."""
    starts, t = [], 1.0
    pending = list(seams)
    while t < duration - every:
        if pending and t + every > pending[0] - 1.5:
            t = pending.pop(0) - 1.5
        starts.append(t)
        t += every
    return starts


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """12 minutes of test pattern (640x360, 5 fps) with a sentence every 9 s."""
    directory = tmp_path_factory.mktemp("long")
    return scheduled_clip(directory, "long.mp4", LONG_S, _starts(LONG_S, 9.0, SEAMS),
                          keyframe_every_s=KEYFRAME_EVERY_S)  # fmt: skip


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Clip:
    """Two minutes, a sentence every 6 s: five pieces of 24 s a stage under `SHORT`."""
    directory = tmp_path_factory.mktemp("short")
    return scheduled_clip(directory, "short.mp4", 120.0, _starts(120.0, 6.0, ()),
                          size="320x180", keyframe_every_s=4.0)  # fmt: skip


SHORT = {"FANOUT_MIN_S": "60", "PIECE_S": "24"}


def heard_per_sentence(clip: Clip, words: list[dict[str, Any]]) -> list[list[str]]:
    """The words heard while each sentence was spoken (by their start times)."""
    return [
        [w["word"] for w in words if s.start - 0.6 <= w["start"] < s.end + 0.6] for s in clip.spoken
    ]


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())  # "day 6" and "day six" alike: two


def assert_every_sentence_heard_once(clip: Clip, transcript: dict[str, Any]) -> None:
    """Each sentence's words are in the transcript once, where it was spoken: none lost or
    doubled (at a seam or anywhere), whatever Whisper misheard of a word or two."""
    words = [w for seg in transcript["segments"] for w in seg["words"]]
    starts = [w["start"] for w in words]
    assert starts == sorted(starts), "timestamps go back"
    for spoken, got in zip(clip.spoken, heard_per_sentence(clip, words), strict=True):
        said, found = _tokens(spoken.text), _tokens(" ".join(got))
        similar = difflib.SequenceMatcher(None, said, found).ratio()
        assert len(said) - 2 <= len(found) <= len(said) + 2 and similar >= 0.4, (spoken, got)
    total = sum(len(_tokens(s.text)) for s in clip.spoken)
    heard = len(_tokens(" ".join(w["word"] for w in words)))
    assert abs(heard - total) <= total * 0.05, (heard, total)


def pieces_of(events: list[dict[str, Any]], stage: str) -> set[int]:
    return {e["pieces"]["total"] for e in events if e["stage"] == stage and "pieces" in e}


async def test_a_long_video_fans_out_and_comes_back_whole(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    long_clip: Clip, tmp_path: Path,
) -> None:  # fmt: skip
    """A 12-minute video, each stage in four pieces worked two at a time: a transcript with every
    sentence once and timestamps that never go back; a video with every frame of the source
    once, its sound whole, and at each seam the cue being spoken drawn on both sides of it."""
    settings = make_settings(fanout_min_s=300.0, piece_s=PIECE_S, concurrency=2)
    async with Stack(settings) as stack:
        assert stack.gateway is not None
        job = await upload_job(http, stack.gateway.url, long_clip.path)
        events = await watch(job, timeout_s=400)
        async with http.get(job["links"]["self"]) as r:
            final = await r.json()
        assert final["status"] == "completed", final
        transcript = json.loads(await fetch(http, final["outputs"]["transcript"]["url"]))
        srt = (await fetch(http, final["outputs"]["srt"]["url"])).decode()
        video = tmp_path / "out.mp4"
        video.write_bytes(await fetch(http, final["outputs"]["video"]["url"]))
    names = [e["event"] for e in events]
    assert names.count("completed") == 1
    assert pieces_of(events, "transcribe") == {4} and pieces_of(events, "render") == {4}
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)
    assert max(e["progress"] for e in events if e["event"] == "progress") < 1.0  # joined last
    pieces = Keys(settings.redis_prefix).job_pieces(job["id"])
    assert not await redis.exists(pieces), "the pieces are forgotten once each stage is done"

    assert_every_sentence_heard_once(long_clip, transcript)
    await asyncio.to_thread(_whole_with_cues_at_seams, video, long_clip, srt, tmp_path)


def _whole_with_cues_at_seams(video: Path, clip: Clip, srt: str, tmp_path: Path) -> None:
    assert video_frames(video) == video_frames(clip.path)
    assert abs(duration_of(video) - duration_of(clip.path)) < 0.25
    with av.open(str(video)) as container:
        sound = container.streams.audio[0]
        assert abs(float(sound.duration * sound.time_base) - LONG_S) < 0.25

    # The seams are where the source's keyframes cut it; a sentence is spoken across each.
    with av.open(str(clip.path)) as container:
        stream = container.streams.video[0]
        keys = [float(p.pts * p.time_base) for p in container.demux(stream) if p.is_keyframe]
    cuts = frame_cuts([(k, 1) for k in keys], LONG_S, PIECE_S)
    assert cuts is not None and tuple(p.start for p in cuts[1:]) == SEAMS
    cues = parse_cues(srt)
    seam = SEAMS[1]
    [(_, _, text)] = [c for c in cues if c[0] < seam - 0.4 and c[1] > seam + 0.2]
    wanted = {w for w in words_of(text) if len(w) >= 4}
    for at in (seam - 0.2, seam):  # the last frame of one segment, the first of the next
        seen = set(words_of(ocr(_bottom(video, at), tmp_path)))
        assert len(wanted & seen) >= 2, (at, text, seen)


def _bottom(video: Path, at_s: float) -> Any:
    """The bottom of the picture at `at_s` with only the subtitles' white text kept, black on
    white and twice the size (the test pattern behind it would read as letters)."""
    from tests.test_compose import frame_at

    picture = frame_at(video, at_s)
    bottom = picture[int(picture.shape[0] * 0.7) :]
    text = bottom.min(axis=2) > 200
    plain = np.where(text[..., None], 0, 255).astype(np.uint8).repeat(3, axis=2)
    return plain.repeat(2, axis=0).repeat(2, axis=1)


# -- faults --------------------------------------------------------------------------------------


@pytest.fixture
async def cluster(role_env: dict[str, str]) -> AsyncIterator[Cluster]:
    running = Cluster({**role_env, **SHORT, "VISIBILITY_TIMEOUT_S": "4"})
    try:
        yield running
    finally:
        await running.close()


async def test_a_worker_killed_mid_piece_still_ends_with_one_whole_result(
    cluster: Cluster, http: aiohttp.ClientSession, short_clip: Clip, tmp_path: Path
) -> None:
    """SIGKILL to the worker coordinating a fanned-out transcription while both workers have a
    piece: the other takes the stage over with the pieces already done, the killed worker's
    piece is worked again, and the job ends once, with every sentence once."""
    for role in ("gateway", "notifier", "render"):
        await cluster.start(role)
    first = await cluster.start("transcribe")
    second = await cluster.start("transcribe")
    job = await upload_job(http, cluster.gateway, short_clip.path)
    coordinator, helper = await _coordinator(first, second)
    await helper.wait_for('"piece_started"')
    coordinator.proc.send_signal(signal.SIGKILL)
    await coordinator.proc.wait()
    events = await watch(job, timeout_s=120)
    assert [e["event"] for e in events].count("completed") == 1, await cluster.report(
        http, [job["id"]]
    )
    await helper.wait_for('"pieces_queued"')  # it took the stage over, with the same pieces
    async with http.get(job["links"]["self"]) as r:
        final = await r.json()
    transcript = json.loads(await fetch(http, final["outputs"]["transcript"]["url"]))
    assert_every_sentence_heard_once(short_clip, transcript)
    storage = Path(cluster.env["VIDSTREAM_DATA_DIR"]) / "storage"
    assert len(list(storage.glob("rendered/*.mp4"))) == 1

    async def segments_gone() -> bool:  # joined, then deleted (just after the job completed)
        return not list(storage.glob(f"jobs/{job['id']}/*/segment-*"))

    await eventually(segments_gone, timeout_s=10)


async def _coordinator(*roles: Any) -> tuple[Any, Any]:
    """The worker that queued the pieces, and the other one."""
    waits = {asyncio.ensure_future(r.wait_for('"pieces_queued"', 60)): r for r in roles}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    coordinator = waits[next(iter(done))]
    return coordinator, next(r for r in roles if r is not coordinator)


async def test_cancel_stops_every_piece(
    make_settings: Callable[..., Settings], redis: object, http: aiohttp.ClientSession,
    short_clip: Clip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """DELETE while two render segments are encoding on two slots: both FFmpegs stop within
    2 s, nothing is left running or stored, and the job ends cancelled once."""
    faults = Faults(tmp_path / "faults")
    for name, value in faults.env.items():  # read by the fake FFmpeg the workers run
        monkeypatch.setenv(name, value)
    settings = make_settings(ffmpeg=str(FAKE_FFMPEG), fanout_min_s=60.0, piece_s=24.0,
                             concurrency=2)  # fmt: skip
    faults.delay("render", 60)
    rendering = faults.announce("render")
    async with Stack(settings) as stack:
        assert stack.gateway is not None
        job = await upload_job(http, stack.gateway.url, short_clip.path)
        pids = await rendering.pids(2, timeout_s=120)  # a segment on each slot
        async with http.delete(job["links"]["self"]) as r:
            assert r.status == 200
        for pid in pids:
            await wait_exit(pid, 2.0)
        events = await watch(job)
        assert [e["event"] for e in events].count("cancelled") == 1
        assert events[-1]["event"] == "cancelled" and events[-1]["stage"] == "render"
        workers: list[Worker] = stack.workers
        tasks = [t for w in workers for t in (*w._pieces.values(), *(r.task for r in
                 w._runs.values() if r.task))]  # fmt: skip
        if tasks:  # the entries of pieces not started yet are read, found gone and acked
            await asyncio.wait(tasks, timeout=5)
        assert sorted(faults.pids("render")) == sorted(pids)  # none started after the cancel
        for worker in workers:
            assert not list(worker.tmp_root.glob(f"{job['id']}*")), "temp files left"
    storage = Path(settings.data_dir) / "storage"
    assert not list(storage.glob(f"jobs/{job['id']}/*/segment-*"))
    assert not list(storage.glob("rendered/*"))
