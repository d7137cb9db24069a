"""End to end through `vidstream dev`'s four roles in one process: real Redis, Whisper, FFmpeg."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from redis.asyncio import Redis

from tests.conftest import fetch, upload_job, watch
from tests.media import Clip, codecs_of, duration_of, gray_frame, make_clip, parse_cues, words_of
from vidstream.actors.transcribe import TranscribeWorker
from vidstream.core.settings import Settings
from vidstream.runtime import Stack

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
async def test_video_in_subtitled_video_out(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip, tmp_path: Path
) -> None:
    """A spoken clip comes back with its words in SRT/VTT at the right times, and burned in."""
    assert stack.gateway is not None
    job = await upload_job(http, stack.gateway.url, clip.path)
    assert job["status"] == "queued" and job["ws_token"] and job["links"]["ws"].startswith("ws://")

    events = await watch(job)
    names = [e["event"] for e in events]
    assert names[0] == "queued" and names[-1] == "completed", names
    assert names.count("completed") == 1
    assert names.index("started") < names.index("progress") < names.index("stage_completed")
    assert [e["stage"] for e in events if e["event"] == "started"] == ["transcribe", "render"]
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert len([e for e in events if e["event"] == "progress"]) >= 2

    async with http.get(job["links"]["self"]) as r:
        final = await r.json()
    assert final["status"] == "completed" and final["error"] is None
    assert set(final["outputs"]) == {"transcript", "srt", "vtt", "video"}

    # The subtitles hold most spoken words, each sentence shown while it is spoken.
    for fmt in ("srt", "vtt"):
        cues = parse_cues((await fetch(http, final["outputs"][fmt]["url"])).decode())
        heard = {w for _, _, text in cues for w in words_of(text)}
        assert sum(w in heard for w in clip.words) / len(clip.words) >= 0.75, (fmt, cues)
        assert all(0 <= start < end <= clip.duration + 0.5 for start, end, _ in cues), cues
        for spoken in clip.spoken:
            key_word = max(words_of(spoken.text), key=len)  # its longest word, e.g. "watching"
            shown = [(s, e) for s, e, text in cues if key_word in words_of(text)]
            assert shown, (key_word, cues)
            assert any(s < spoken.end + 0.5 and e > spoken.start - 0.5 for s, e in shown), (
                spoken,
                shown,
            )

    transcript = json.loads(await fetch(http, final["outputs"]["transcript"]["url"]))
    words = [w for seg in transcript["segments"] for w in seg["words"]]
    assert words and all(0 <= w["start"] <= w["end"] <= clip.duration + 0.5 for w in words)

    # The MP4 plays, is as long as the source, and shows the subtitle over the picture.
    video = tmp_path / "out.mp4"
    video.write_bytes(await fetch(http, final["outputs"]["video"]["url"]))
    assert codecs_of(video) == {"video": "h264", "audio": "aac"}
    assert abs(duration_of(video) - duration_of(clip.path)) < 0.25
    middle = (clip.spoken[1].start + clip.spoken[1].end) / 2
    before, after = gray_frame(clip.path, middle), gray_frame(video, middle)
    changed = np.abs(after - before) > 48  # far beyond what re-encoding alone changes
    height = changed.shape[0]
    bottom, top = changed[int(height * 0.75) :].mean(), changed[: int(height * 0.5)].mean()
    assert bottom > 0.02 and top < 0.002, (bottom, top)


async def test_soft_subtitles_keep_the_video_stream(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip, tmp_path: Path
) -> None:
    """With burn_subtitles false the MP4 carries a subtitle track and an untouched picture."""
    assert stack.gateway is not None
    job = await upload_job(
        http, stack.gateway.url, clip.path, burn_subtitles="false", formats="srt"
    )
    events = await watch(job)
    assert events[-1]["event"] == "completed"
    async with http.get(job["links"]["self"]) as r:
        final = await r.json()
    assert set(final["outputs"]) == {"transcript", "srt", "video"}  # no VTT was asked for
    video = tmp_path / "soft.mp4"
    video.write_bytes(await fetch(http, final["outputs"]["video"]["url"]))
    assert codecs_of(video) == {"video": "h264", "audio": "aac", "subtitle": "mov_text"}
    middle = (clip.spoken[1].start + clip.spoken[1].end) / 2
    diff = np.abs(gray_frame(video, middle) - gray_frame(clip.path, middle)).mean()
    assert diff < 0.5  # the same encoded frames: copied, not re-encoded


async def test_a_transcribe_job_stores_the_transcript_only(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip
) -> None:
    """`kind: transcribe` stores JSON, SRT and VTT, renders no video, and its progress reaches
    100 % when its one stage ends, with one terminal event."""
    assert stack.gateway is not None
    job = await upload_job(http, stack.gateway.url, clip.path, kind="transcribe")
    assert job["kind"] == "transcribe"
    events = await watch(job)
    assert [e["event"] for e in events if e["status"] in ("completed", "failed", "cancelled")] == [
        "completed"
    ]
    assert {e["stage"] for e in events} <= {None, "transcribe"}
    assert all(e["kind"] == "transcribe" for e in events)
    assert events[-1]["progress"] == 1.0 and events[-1]["outputs"] == ["srt", "transcript", "vtt"]
    async with http.get(job["links"]["self"]) as r:
        final = await r.json()
    assert (final["status"], final["progress"], final["kind"]) == ("completed", 1.0, "transcribe")
    assert set(final["outputs"]) == {"transcript", "srt", "vtt"}
    cues = parse_cues((await fetch(http, final["outputs"]["srt"]["url"])).decode())
    heard = {w for _, _, text in cues for w in words_of(text)}
    assert sum(w in heard for w in clip.words) / len(clip.words) >= 0.75, cues


async def test_text_file_fails_and_the_next_job_completes(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip, text_file: Path
) -> None:
    """A file that is not a video ends `failed` with invalid_media; the worker carries on."""
    assert stack.gateway is not None
    bad = await upload_job(http, stack.gateway.url, text_file)
    events = await watch(bad)
    assert [e["event"] for e in events][-1] == "failed"
    assert events[-1]["error"]["code"] == "invalid_media"
    async with http.get(bad["links"]["self"]) as r:
        failed = await r.json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "invalid_media"
    assert "could not be read as a video" in failed["error"]["message"]

    good = await upload_job(http, stack.gateway.url, clip.path)
    assert (await watch(good))[-1]["event"] == "completed"


CONTAINERS = {
    "webm": (
        ("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"),
        ("-c:a", "libopus"),
    ),
    "mov": (("-c:v", "libx264", "-preset", "ultrafast"), ("-c:a", "pcm_s16le")),
    "mkv": (("-c:v", "libx264", "-preset", "ultrafast"), ("-c:a", "libmp3lame")),
}


@pytest.mark.parametrize(
    ("container", "burn"), [("webm", "true"), ("mov", "false"), ("mkv", "true")]
)
async def test_other_containers(
    stack: Stack, http: aiohttp.ClientSession, tmp_path: Path, container: str, burn: str
) -> None:
    """WebM (VP9/Opus), MOV (PCM audio) and MKV sources all come back as playable MP4s."""
    assert stack.gateway is not None
    video, audio = CONTAINERS[container]
    # In a thread: encoding VP9 takes about a second, which would block the stack's loop.
    source = await asyncio.to_thread(
        make_clip, tmp_path, f"clip.{container}", size="320x180", video=video, audio=audio
    )
    job = await upload_job(http, stack.gateway.url, source.path, burn_subtitles=burn)
    events = await watch(job)
    assert events[-1]["event"] == "completed", events[-1]
    async with http.get(job["links"]["self"]) as r:
        final = await r.json()
    out = tmp_path / "out.mp4"
    out.write_bytes(await fetch(http, final["outputs"]["video"]["url"]))
    codecs = codecs_of(out)
    # MP4 cannot carry PCM or Opus for every player: such audio becomes AAC; MP3 is copied.
    assert codecs["audio"] == ("mp3" if container == "mkv" else "aac")
    # A soft track keeps H.264 as it was; VP9 is re-encoded only when the picture is redrawn.
    assert codecs["video"] == "h264"
    assert ("subtitle" in codecs) == (burn == "false")
    assert abs(duration_of(out) - source.duration) < 0.3


async def test_long_sources_are_transcribed_in_ranges(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession, clip: Clip
) -> None:
    """Transcribed a few seconds at a time, the words keep their times in the whole video."""
    async with Stack(make_settings(whisper_range_s=4.0)) as stack:
        assert stack.gateway is not None
        job = await upload_job(http, stack.gateway.url, clip.path, burn_subtitles="false")
        assert (await watch(job))[-1]["event"] == "completed"
        async with http.get(job["links"]["self"]) as r:
            final = await r.json()
        transcript = json.loads(await fetch(http, final["outputs"]["transcript"]["url"]))
    words = [w for seg in transcript["segments"] for w in seg["words"]]
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert starts[-1] > 8.0  # the last sentence, beyond two ranges, at its real time
    heard = {t for w in words for t in words_of(w["word"])}
    assert sum(w in heard for w in clip.words) / len(clip.words) >= 0.6


async def test_a_dead_whisper_server_is_replaced(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip
) -> None:
    """If the Whisper process dies between jobs, the next job still completes."""
    assert stack.gateway is not None
    worker = next(w for w in stack.workers if isinstance(w, TranscribeWorker))
    (pid,) = worker.pool.pids()
    os.kill(pid, signal.SIGKILL)
    job = await upload_job(http, stack.gateway.url, clip.path, burn_subtitles="false")
    assert (await watch(job))[-1]["event"] == "completed"
    assert worker.pool.pids() != [pid]
