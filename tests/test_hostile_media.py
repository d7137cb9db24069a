"""Hostile sources through the whole stack: real Redis, Whisper and FFmpeg.

Sources are media files, never playlists or lists of other files, and the limits hold on what is
decoded, whatever a header says. A playlist naming a private clip elsewhere on the worker's disk
must fail without a word of that clip coming back in a transcript, a video or an event.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.conftest import upload_job, watch
from tests.faults import FAKE_FFMPEG, Faults, wait_exit
from tests.media import (
    FFMPEG,
    Clip,
    lie_about_duration,
    make_clip,
    watch_opens,
    write_dash,
    write_ffconcat,
    write_hls,
)
from vidstream.core.errors import ObjectTooLarge
from vidstream.core.settings import Settings
from vidstream.job.model import Job, Options
from vidstream.kinds import subtitle, transcribing
from vidstream.kinds.sources import source_path
from vidstream.kinds.transcribing import expected_sound, next_range
from vidstream.media.whisper_server import buffer_samples, decode_range
from vidstream.runtime import Stack

pytestmark = pytest.mark.slow

PHRASE = "purple elephant seventeen"  # spoken only in the private clip: it must never come back
MAX_DURATION_S = 15.0  # above the `clip` fixture's length (about 10 s)
MAX_PIXELS = 640 * 480  # above the `clip` fixture's 640x360
PICTURE = ("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10")
SOUND = ("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000")
X264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")
INTERNALS = re.compile(r"/|0x[0-9a-fA-F]{4,}|Traceback|Errno|@")  # paths, heap addresses


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True)


@dataclass(frozen=True)
class Corpus:
    secrets: tuple[Path, ...]  # a clip elsewhere on the disk, speaking PHRASE (TS, MP4)
    references: tuple[Path, ...]  # HLS, ffconcat and DASH naming it
    hostile: dict[str, tuple[Path, str]]  # name: (file, the error code its job ends with)
    lying: Path  # an MKV whose header says 1 s; it plays MAX_DURATION_S + 5 s


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Tiny files (1 s, 160x120 unless the size is the point), made once for the module."""
    d = tmp_path_factory.mktemp("hostile")
    private = d / "private"
    private.mkdir()
    secret = make_clip(private, "secret.ts", size="160x120", sentences=(PHRASE,)).path
    secret_mp4 = private / "secret.mp4"
    ffmpeg("-i", str(secret), "-c", "copy", str(secret_mp4))

    good = d / "good.mp4"
    ffmpeg(*PICTURE, *SOUND, "-t", "1", *X264, "-c:a", "aac", str(good))
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    noise = d / "noise.mp4"
    noise.write_bytes(random.Random(1234).randbytes(64 * 1024))
    text = d / "notes.mp4"
    text.write_text("This is a text file pretending to be a video.\n" * 20)
    truncated = d / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # its index is at the end
    audio_only = d / "audio.m4a"
    ffmpeg(*SOUND, "-t", "1", "-c:a", "aac", str(audio_only))
    video_only = d / "silent.mp4"
    ffmpeg(*PICTURE, "-t", "1", *X264, str(video_only))
    too_long = d / "long.mp4"
    ffmpeg(*PICTURE, *SOUND, "-t", f"{MAX_DURATION_S + 2:g}", *X264, "-c:a", "aac", str(too_long))
    # Says 1 s in its header, plays past the limit: only decoding finds out.
    plays_long = d / "plays-long.mkv"
    ffmpeg(*PICTURE, *SOUND, "-t", f"{MAX_DURATION_S + 5:g}", *X264, "-c:a", "libopus",
           str(plays_long))  # fmt: skip
    lying = lie_about_duration(plays_long, d / "lying.mkv", 1.0)
    big = d / "big.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=800x600:rate=5", *SOUND, "-t", "1", *X264,
           "-c:a", "aac", str(big))  # fmt: skip

    playlist = write_hls(d / "holiday.m3u8", secret)
    concat = write_ffconcat(d / "holiday.ffconcat", secret)
    manifest = write_dash(d / "holiday.mpd", secret_mp4)
    hostile = {
        "hls playlist": (playlist, "invalid_media"),
        "ffconcat list": (concat, "invalid_media"),
        "dash manifest": (manifest, "invalid_media"),
        "empty file": (empty, "invalid_media"),
        "random bytes": (noise, "invalid_media"),
        "text named .mp4": (text, "invalid_media"),
        "truncated mp4": (truncated, "invalid_media"),
        "audio only": (audio_only, "invalid_media"),
        "video only": (video_only, "invalid_media"),
        "longer than the limit": (too_long, "too_long"),
        "plays longer than its header says": (lying, "too_long"),
        "picture beyond max_pixels": (big, "too_large_frame"),
    }
    return Corpus((secret, secret_mp4), (playlist, concat, manifest), hostile, lying)


@pytest.fixture
async def stack(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Stack]:
    settings = make_settings(max_duration_s=MAX_DURATION_S, max_pixels=MAX_PIXELS)
    async with Stack(settings) as running:
        yield running


def gateway(stack: Stack) -> str:
    assert stack.gateway is not None
    return stack.gateway.url


async def run_job(http: aiohttp.ClientSession, url: str, path: Path) -> dict[str, Any]:
    """Upload `path` as a job; its events up to the end (within 15 s) and the job as it ended."""
    job = await upload_job(http, url, path)
    events = await watch(job, timeout_s=15)
    async with http.get(job["links"]["self"]) as r:
        final: dict[str, Any] = await r.json()
    return {"events": events, "job": final}


def said(text: str) -> bool:
    """Whether any word of PHRASE is in `text`."""
    return any(word in text.lower() for word in PHRASE.split())


async def test_playlists_never_read_the_files_they_name(
    stack: Stack, http: aiohttp.ClientSession, corpus: Corpus, clip: Clip
) -> None:
    """An HLS playlist, ffconcat list or DASH manifest naming a private clip on the worker's
    disk fails `invalid_media`: no process opens that clip, and none of its words come back."""
    with watch_opens(*corpus.secrets) as opened:
        ended = await asyncio.gather(
            *(run_job(http, gateway(stack), path) for path in corpus.references)
        )
    assert opened == []
    for result in ended:
        final = result["job"]
        assert (final["status"], final["error"]["code"]) == ("failed", "invalid_media"), final
        # Refused as a list of files, or (stored without its .m3u8 name) as no format at all.
        message = final["error"]["message"]
        assert "playlist" in message or "could not be read as a video" in message, message
        assert final["outputs"] == {}
        assert not said(json.dumps(result)), result
    good = await run_job(http, gateway(stack), clip.path)
    assert good["job"]["status"] == "completed"


async def test_each_hostile_file_fails_with_its_code(
    stack: Stack, http: aiohttp.ClientSession, corpus: Corpus, clip: Clip
) -> None:
    """Each hostile file ends `failed` with the code that says why, in a message with no paths
    or addresses, and a normal video afterwards completes."""
    names = list(corpus.hostile)
    ended = await asyncio.gather(
        *(run_job(http, gateway(stack), corpus.hostile[name][0]) for name in names)
    )
    codes = {name: (r["job"]["status"], (r["job"]["error"] or {}).get("code")) for name, r in
             zip(names, ended, strict=True)}  # fmt: skip
    assert codes == {name: ("failed", code) for name, (_path, code) in corpus.hostile.items()}
    for name, result in zip(names, ended, strict=True):
        message = result["job"]["error"]["message"]
        assert not INTERNALS.search(message) and message.endswith("."), (name, message)
        assert result["events"][-1]["event"] == "failed"
        assert result["job"]["outputs"] == {}
        assert not said(json.dumps(result)), (name, result)
    messages = {name: r["job"]["error"]["message"] for name, r in zip(names, ended, strict=True)}
    assert "plays on past 15 seconds" in messages["plays longer than its header says"]
    assert "800x600" in messages["picture beyond max_pixels"]

    good = await run_job(http, gateway(stack), clip.path)
    assert good["job"]["status"] == "completed", good["job"]
    assert set(good["job"]["outputs"]) == {"transcript", "srt", "vtt", "video"}


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
async def test_a_source_past_the_size_limit_is_not_downloaded(
    make_settings: Callable[..., Settings], redis: Redis, tmp_path: Path
) -> None:
    """A source that grew past MAX_UPLOAD_BYTES after its job was made fails `too_large` before
    any of it is fetched; one at the limit is fetched whole."""
    async with Stack(make_settings(), ("gateway",)) as running:
        assert running.services is not None
        store = running.services.store
        data = random.Random(5).randbytes(4096)
        src = tmp_path / "grown.mp4"
        src.write_bytes(data)
        await store.put_file("uploads/grown/source", src, "video/mp4")
        job = Job.new("uploads/grown/source", Options())
        workdir = tmp_path / "work"
        workdir.mkdir()
        with pytest.raises(ObjectTooLarge) as err:
            await source_path(store, job, workdir, max_bytes=len(data) - 1)
        assert err.value.code == "too_large" and "/" not in err.value.message
        assert list(workdir.iterdir()) == []
        fetched = await source_path(store, job, workdir, max_bytes=len(data))
        assert fetched.read_bytes() == data


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("transcribe", "Transcribing took longer than 2 s."),
        ("render", "Rendering took longer than 2 s."),
    ],
)
async def test_a_run_past_its_deadline_is_stopped(
    make_settings: Callable[..., Settings],
    redis: Redis,
    http: aiohttp.ClientSession,
    clip: Clip,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
    message: str,
) -> None:
    """A Whisper or FFmpeg run that outlasts the deadline its video's duration gives is stopped,
    process group and all, and the job ends `timeout` (here on its one try)."""
    faults = Faults(tmp_path / "faults")
    for name, value in faults.env.items():
        monkeypatch.setenv(name, value)
    work = transcribing if stage == "transcribe" else subtitle  # a subtitle job's stages
    monkeypatch.setattr(work, "run_timeout", lambda duration_s, factor: 2.0)
    faults.delay(stage, 60)
    announced = faults.announce(stage)
    settings = make_settings(ffmpeg=str(FAKE_FFMPEG), job_max_attempts=1)
    async with Stack(settings) as running:
        job = await upload_job(http, gateway(running), clip.path, burn_subtitles="false")
        pid = await announced.pid(timeout_s=15)
        events = await watch(job, timeout_s=15)
        await wait_exit(pid, timeout_s=5)
    assert events[-1]["event"] == "failed"
    assert events[-1]["error"] == {"code": "timeout", "message": message}
    # Nothing of its group is left (the fake's sleep included). A killed member is gone a
    # moment after its leader, once reaped: look again until then, at most two seconds.
    async with asyncio.timeout(2):
        while True:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.05)  # polling the OS, which has no event for a group


# -- the pure parts and the decoder, without the stack --------------------------------------------


@pytest.mark.parametrize(
    ("start", "size", "limit", "end", "last"),
    [
        (0.0, 1200.0, 14400.0, 1200.0, False),
        (13200.0, 1200.0, 14400.0, 14400.0, True),
        (13500.0, 1200.0, 14400.0, 14400.0, True),
        (0.0, 1200.0, 15.0, 15.0, True),
    ],
)
def test_ranges_never_pass_the_limit(
    start: float, size: float, limit: float, end: float, last: bool
) -> None:
    """Each Whisper request names its end, at most a range long and never past MAX_DURATION_S."""
    assert next_range(start, size, limit) == (end, last)


@pytest.mark.parametrize(
    ("start", "end", "duration", "expected"),
    [(0.0, 1200.0, 10.0, 10.0), (0.0, 1200.0, 3000.0, 1200.0), (1200.0, 2400.0, 1.0, 1200.0)],
)
def test_the_sound_a_range_should_hold(
    start: float, end: float, duration: float, expected: float
) -> None:
    """A range's deadline follows the probed duration, or the whole range once the sound has
    gone on past what the header said."""
    assert expected_sound(start, end, duration) == expected


def test_the_audio_buffer_has_a_hard_cap() -> None:
    """A Whisper server never holds more than its range and a second of sound, whatever the
    header says; the first allocation follows the probed duration."""
    first, cap = buffer_samples(0.0, 1200.0, hint=14400.0)
    assert cap == 1201 * 16000 + 1600 and first <= cap
    first, cap = buffer_samples(0.0, 1200.0, hint=1.0)  # a header saying 1 s
    assert first == 2 * 16000 and cap == 1201 * 16000 + 1600
    first, cap = buffer_samples(1200.0, 1210.0, hint=0.0)
    assert cap == 11 * 16000 + 1600 and first <= cap


def test_decoding_stops_at_the_range_whatever_the_header_says(corpus: Corpus) -> None:
    """A source whose header says 1 s is decoded only to its range's end, and says its sound
    goes on; decoded in full, its real length comes out."""
    short = decode_range(FFMPEG, str(corpus.lying), "matroska", 0.0, 5.0, hint=1.0)
    assert short.more and short.seconds == 5.0 and len(short.audio) == 5 * 16000
    whole = decode_range(FFMPEG, str(corpus.lying), "matroska", 0.0, 60.0, hint=1.0)
    assert not whole.more
    assert whole.seconds == pytest.approx(MAX_DURATION_S + 5, abs=0.1)
