"""Compose: a video made from a JSON timeline, end to end against the real stack, and the
gateway's checks and templates.

The e2e timeline uses every kind of clip a user reaches for: a gradient background, a photo
with a slow zoom, a trimmed video clip, a title with a placeholder, music ducked under a
narration, and subtitles from transcribing that narration. The finished video is then read
back: its streams and length, pixel colours in each window, the title and the subtitles by
OCR (tesseract), and the music's level with and without the voice over it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from redis.asyncio import Redis

from tests.conftest import fetch, watch
from tests.media import FFMPEG, speech_wav, words_of
from tests.test_gateway import expect_error, gw, upload
from vidstream.core.settings import Settings
from vidstream.runtime import Stack

SENTENCE = "Please open the window and let the fresh air in."
RED, BLUE = (208, 32, 32), (32, 64, 208)
W, H, FPS, LENGTH = 640, 360, 25, 6.0
VOICE_AT = 1.0


@pytest.fixture
async def api(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Stack]:
    """The gateway alone: what it refuses never reaches a worker."""
    async with Stack(make_settings(), ("gateway", "notifier")) as running:
        yield running


@dataclass(frozen=True)
class Media:
    photo: Path
    video: Path
    music: Path
    voice: Path
    voice_s: float


def _ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    d = tmp_path_factory.mktemp("compose")
    photo, video, music = d / "photo.png", d / "blue.mp4", d / "music.wav"
    red, blue = ("0x{:02x}{:02x}{:02x}".format(*c) for c in (RED, BLUE))
    _ffmpeg("-f", "lavfi", "-i", f"color=c={red}:s=800x600", "-frames:v", "1", str(photo))
    _ffmpeg("-f", "lavfi", "-i", f"color=c={blue}:s=320x240:r=25:d=4", "-c:v", "libx264",
            "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(video))  # fmt: skip
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=8:sample_rate=48000",
            "-af", "volume=0.5", str(music))  # fmt: skip
    voice, spoken = speech_wav(d, (SENTENCE,))
    return Media(photo, video, music, voice, spoken[-1].end + 0.4)


def example(keys: dict[str, str], voice_s: float) -> dict[str, Any]:
    """The timeline of docs/api.md's example, with the test's uploads."""
    return {
        "output": {"width": W, "height": H, "fps": FPS, "duration": LENGTH},
        "tracks": [
            {"name": "background", "clips": [
                {"type": "color", "start": 0, "duration": LENGTH, "color": "#303030",
                 "gradient": {"to": "#101010"}},
            ]},
            {"name": "pictures", "clips": [
                {"type": "image", "key": keys["photo"], "start": 0, "duration": 2.5,
                 "zoom": {"start": 1.0, "end": 1.3},
                 "transition_out": {"type": "fade", "duration": 0.5}},
                {"type": "video", "key": keys["video"], "start": 2.5, "duration": 2,
                 "trim": {"start": 1}, "transition_in": {"type": "slide", "duration": 0.4}},
            ]},
            {"name": "title", "clips": [
                {"type": "text", "text": "Hello {{name}}", "start": 4.6, "duration": 1.4,
                 "size": 72, "bold": True},
            ]},
            {"name": "music", "clips": [
                {"type": "audio", "key": keys["music"], "start": 0, "duration": LENGTH,
                 "fade_out": 0.5, "duck": {"under": "voice"}},
            ]},
            {"name": "voice", "clips": [
                {"type": "audio", "name": "narration", "key": keys["voice"], "start": VOICE_AT,
                 "duration": round(voice_s, 2)},
            ]},
        ],
    }  # fmt: skip


def frame_at(path: Path, at_s: float) -> np.ndarray:
    """The RGB picture shown at `at_s`."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= at_s:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"no frame at {at_s}s")


def near(pixel: np.ndarray, colour: tuple[int, int, int], within: int = 40) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= within))


def ocr(picture: np.ndarray, tmp: Path) -> str:
    """What tesseract reads in the picture, lower-cased."""
    ppm = tmp / "ocr.ppm"  # the plainest picture file tesseract reads
    height, width = picture.shape[:2]
    ppm.write_bytes(b"P6\n%d %d\n255\n" % (width, height) + picture.astype(np.uint8).tobytes())
    done = subprocess.run(["tesseract", str(ppm), "-", "--psm", "6"], capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    return done.stdout.lower()


def tone_level(path: Path, start: float, end: float, hz: float = 440.0) -> float:
    """How strong the `hz` tone is in [start, end): the Hann-windowed spectrum's peak there."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        chunks = [f.to_ndarray().mean(axis=0) for f in container.decode(stream)]
    pcm = np.concatenate(chunks)[int(start * rate) : int(end * rate)]
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    freqs = np.fft.rfftfreq(len(pcm), 1 / rate)
    band = (freqs > hz - 3) & (freqs < hz + 3)
    return float(spectrum[band].max())


async def upload_file(http: aiohttp.ClientSession, stack: Stack, path: Path) -> str:
    return await upload(http, stack, path.read_bytes(), path.name)


@pytest.mark.slow  # real Whisper, FFmpeg and OCR
async def test_a_timeline_becomes_the_video_it_describes(
    stack: Stack, http: aiohttp.ClientSession, media: Media, tmp_path: Path
) -> None:
    keys = {name: await upload_file(http, stack, getattr(media, name))
            for name in ("photo", "video", "music", "voice")}  # fmt: skip
    body = {"kind": "compose", "timeline": example(keys, media.voice_s),
            "variables": {"name": "WORLD"}, "transcribe": True, "preview": True}  # fmt: skip
    async with http.post(f"{gw(stack)}/v1/jobs", json=body) as r:
        job = await r.json()
        assert r.status == 202, job
    assert job["kind"] == "compose" and job["status"] == "queued"
    events = await watch(job, timeout_s=180)
    assert events[-1]["event"] == "completed", events[-1]
    stages = [e["stage"] for e in events if e["event"] == "started"]
    assert stages == ["transcribe", "render"]
    # The preview is handed out while the video still renders.
    early = [e for e in events if e["event"] == "progress" and e.get("outputs")]
    assert early and "preview" in early[0]["outputs"]
    progress = [e["progress"] for e in events if e["event"] == "progress"]
    assert progress == sorted(progress)

    async with http.get(job["links"]["self"]) as r:
        done = await r.json()
    outputs = done["outputs"]
    assert {"video", "poster", "preview", "transcript", "srt", "vtt"} <= set(outputs)
    video = tmp_path / "out.mp4"
    video.write_bytes(await fetch(http, outputs["video"]["url"]))
    poster = await fetch(http, outputs["poster"]["url"])
    assert poster[:3] == b"\xff\xd8\xff"  # a JPEG
    preview = tmp_path / "preview.mp4"
    preview.write_bytes(await fetch(http, outputs["preview"]["url"]))

    async with http.get(outputs["srt"]["url"]) as r:
        srt = (await r.text()).lower()
    assert sum(w in srt for w in words_of(SENTENCE)) >= len(words_of(SENTENCE)) - 2
    # Decoding and OCR take a while: off the event loop, which serves the stack.
    await asyncio.to_thread(looks_and_sounds_right, video, preview, tmp_path)


def looks_and_sounds_right(video: Path, preview: Path, tmp_path: Path) -> None:
    with av.open(str(video)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        assert (v.codec_context.name, a.codec_context.name) == ("h264", "aac")
        assert (v.width, v.height, v.average_rate) == (W, H, FPS)
        assert container.duration is not None
        assert container.duration / 1e6 == pytest.approx(LENGTH, abs=0.1)
    with av.open(str(preview)) as container:
        assert container.streams.video[0].height == 240  # a small proxy

    middle = (H // 2, W // 2)
    assert near(frame_at(video, 1.0)[middle], RED)  # the photo, zooming
    assert near(frame_at(video, 3.5)[middle], BLUE)  # the trimmed video clip
    title = frame_at(video, 5.2)
    assert near(title[10, 10], (48, 48, 48), within=24)  # the gradient's top
    assert "hello world" in ocr(title, tmp_path)

    # The subtitles of the narration, transcribed: spoken words come back burned in.
    heard = set(words_of(ocr(frame_at(video, VOICE_AT + 2.0)[H * 2 // 3 :], tmp_path)))
    assert heard & {w for w in words_of(SENTENCE) if len(w) > 3}, heard

    # The music is ducked under the voice: its tone is weaker while the narration speaks.
    alone = tone_level(video, 0.1, VOICE_AT - 0.1)
    under = tone_level(video, VOICE_AT + 0.6, VOICE_AT + 0.6 + (VOICE_AT - 0.2))
    assert under < alone / 2, (alone, under)


@pytest.mark.slow  # a full stack (Whisper loads) and a 30 s render
async def test_a_long_timeline_renders_in_segments_with_every_frame(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    media: Media, tmp_path: Path,
) -> None:  # fmt: skip
    """Cut at clip boundaries, rendered at once and joined: the same frames as one pass."""
    settings = make_settings(compose_segment_s=2.0, concurrency=2)
    async with Stack(settings) as stack:
        keys = {name: await upload_file(http, stack, getattr(media, name))
                for name in ("photo", "video", "music", "voice")}  # fmt: skip
        body = {"kind": "compose", "timeline": example(keys, media.voice_s),
                "variables": {"name": "WORLD"}}  # fmt: skip
        async with http.post(f"{gw(stack)}/v1/jobs", json=body) as r:
            job = await r.json()
            assert r.status == 202, job
        events = await watch(job, timeout_s=180)
        assert events[-1]["event"] == "completed", events[-1]
        async with http.get(f"{job['links']['self']}/logs") as r:
            logs = (await r.json())["logs"]
        [planned] = [line for line in logs if line["event"] == "compose_planned"]
        assert planned["fields"]["segments"] == 3
        async with http.get(job["links"]["self"]) as r:
            outputs = (await r.json())["outputs"]
        video = tmp_path / "segmented.mp4"
        video.write_bytes(await fetch(http, outputs["video"]["url"]))
    await asyncio.to_thread(same_as_one_pass, video)


def same_as_one_pass(video: Path) -> None:
    with av.open(str(video)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        count = sum(1 for _ in container.decode(v))
        assert count == LENGTH * FPS  # every frame, once
        assert a.duration is not None and a.time_base is not None
        assert float(a.duration * a.time_base) == pytest.approx(LENGTH, abs=0.05)
    # Either side of the first cut (frame 62, where the video clip starts): the photo, then the
    # video sliding in from the left over it.
    assert near(frame_at(video, 2.0)[H // 2, W // 2], RED)
    assert near(frame_at(video, 3.5)[H // 2, W // 2], BLUE)


def timeline(**output: Any) -> dict[str, Any]:
    return {"output": {"width": 320, "height": 240, **output},
            "tracks": [{"clips": [{"type": "color", "color": "#ff0000", "start": 0,
                                   "duration": 1}]}]}  # fmt: skip


async def post_job(http: aiohttp.ClientSession, stack: Stack, body: dict[str, Any]) -> Any:
    return http.post(f"{gw(stack)}/v1/jobs", json={"kind": "compose", **body})


async def test_every_mistake_in_a_timeline_is_named_by_its_path(
    api: Stack, http: aiohttp.ClientSession
) -> None:
    bad = timeline(width=321)
    bad["tracks"][0]["clips"] += [
        {"type": "text", "text": "", "start": 0, "duration": 1},
        {"type": "sparkles", "start": 0, "duration": 1},
        {"type": "audio", "key": "uploads/x/a.wav", "start": 0, "duration": 1,
         "duck": {"under": "nowhere"}},
    ]  # fmt: skip
    async with await post_job(http, api, {"timeline": bad}) as r:
        body = await r.json()
    assert r.status == 422 and body["error"]["code"] == "invalid_timeline", body
    paths = {d["path"] for d in body["error"]["details"]}
    assert {"timeline.output.width", "timeline.tracks[0].clips[1].text",
            "timeline.tracks[0].clips[2]"} <= paths, paths  # fmt: skip
    assert all(d["rule"] and d["message"] for d in body["error"]["details"])
    # A placeholder without its variable comes in the same answer as the timeline's mistakes.
    bad["tracks"][0]["clips"].append({"type": "text", "text": "Hi {{who}}", "start": 0,
                                      "duration": 1})  # fmt: skip
    async with await post_job(http, api, {"timeline": bad}) as r:
        body = await r.json()
    paths = {d["path"] for d in body["error"]["details"]}
    assert {"timeline.output.width", "variables.who"} <= paths, paths

    # The shape is right, the rules across fields are not: those come by path too.
    crossed = timeline()
    crossed["tracks"][0]["clips"].append({"type": "audio", "key": "uploads/x/a.wav", "start": 0,
                                          "duration": 1, "duck": {"under": "nowhere"}})  # fmt: skip
    crossed["output"]["duration"] = 0.5
    async with await post_job(http, api, {"timeline": crossed}) as r:
        body = await r.json()
    assert r.status == 422, body
    rules = {(d["path"], d["rule"]) for d in body["error"]["details"]}
    assert ("timeline.tracks[0].clips[1].duck.under", "unknown_track") in rules, rules


async def test_missing_uploads_are_refused_before_anything_is_queued(
    api: Stack, http: aiohttp.ClientSession
) -> None:
    key = await upload(http, api, b"\x89PNG not really", "a.png")
    clips = [
        {"type": "image", "key": key, "start": 0, "duration": 1},
        {"type": "image", "key": "uploads/nobody/b.png", "start": 0, "duration": 1},
    ]
    body = {"timeline": {"tracks": [{"clips": clips}]}}
    outside = {"type": "audio", "key": "uploads/../../etc/passwd", "start": 0, "duration": 1}
    async with await post_job(http, api, {"timeline": {"tracks": [{"clips": [outside]}]}}) as r:
        error = (await r.json())["error"]
    assert r.status == 422 and error["details"][0]["rule"] == "key", error
    async with await post_job(http, api, body) as r:
        error = (await r.json())["error"]
    assert r.status == 422, error
    assert [(d["path"], d["rule"]) for d in error["details"]] == [
        ("timeline.tracks[0].clips[1].key", "missing_asset")
    ]
    async with http.get(f"{gw(api)}/v1/jobs") as r:
        assert (await r.json())["jobs"] == []  # nothing was queued
    # The refused request gave back what it took: the upload still serves one job, once.
    body["timeline"]["tracks"][0]["clips"] = clips[:1]
    async with await post_job(http, api, body) as r:
        assert r.status == 202, await r.text()
        job = await r.json()
    assert (job["kind"], job["status"], job["source"]["key"]) == ("compose", "queued", "")
    async with await post_job(http, api, body) as r:
        error = (await r.json())["error"]
    assert r.status == 422 and error["details"][0]["rule"] == "missing_asset"


async def test_compose_requests_that_are_not_json_timelines(
    api: Stack, http: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData()
    form.add_field("kind", "compose")
    form.add_field("file", b"x", filename="a.mp4")
    async with http.post(f"{gw(api)}/v1/jobs", data=form) as r:
        assert "compose job is JSON" in await expect_error(r, 400, "invalid_request")
    async with await post_job(http, api, {"timeline": timeline(), "burn_subtitles": True}) as r:
        assert "burn_subtitles" in await expect_error(r, 400, "invalid_request")
    async with await post_job(http, api, {}) as r:
        assert r.status == 422
    async with await post_job(http, api, {"timeline": timeline(), "transcribe": True}) as r:
        body = await r.json()
    assert r.status == 422 and body["error"]["details"][0]["path"] == "transcribe"


async def test_templates_are_saved_filled_and_deleted(
    api: Stack, http: aiohttp.ClientSession
) -> None:
    base = f"{gw(api)}/v1/templates"
    card = timeline()
    card["tracks"].append({"clips": [{"type": "text", "text": "{{greeting}}, {{who}}",
                                      "start": 0, "duration": 1}]})  # fmt: skip
    saved = {"name": "title-card", "timeline": card, "description": "a greeting"}
    async with http.post(base, json=saved) as r:
        assert r.status == 201, await r.text()
        assert sorted((await r.json())["variables"]) == ["greeting", "who"]
    async with http.post(base, json=saved) as r:
        assert r.status == 200  # replaced
    async with http.get(base) as r:
        [listed] = (await r.json())["templates"]
    assert listed["name"] == "title-card" and "timeline" not in listed
    async with http.get(f"{base}/title-card") as r:
        assert (await r.json())["timeline"] == card

    async with await post_job(http, api, {"template": "title-card",
                                          "variables": {"greeting": "Hi"}}) as r:  # fmt: skip
        error = (await r.json())["error"]
    assert r.status == 422 and error["details"][0]["path"] == "variables.who"
    async with await post_job(
        http, api, {"template": "title-card", "variables": {"greeting": "Hi", "who": "Ada"}}
    ) as r:
        assert r.status == 202, await r.text()
    async with await post_job(http, api, {"template": "nope"}) as r:
        assert (await r.json())["error"]["details"][0]["rule"] == "unknown"

    broken = {"name": "broken", "timeline": {"tracks": [{"clips": [{"type": "color"}]}]}}
    async with http.post(base, json=broken) as r:
        assert r.status == 422
    async with http.delete(f"{base}/title-card") as r:
        assert r.status == 204
    async with http.get(f"{base}/title-card") as r:
        await expect_error(r, 404, "not_found")


async def test_the_timeline_schema_is_published(api: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gw(api)}/v1/schemas/timeline.json") as r:
        assert r.status == 200
        schema = await r.json()
    assert set(schema["properties"]) == {"output", "tracks"}
    kinds = json.dumps(schema["$defs"])
    for clip in ("VideoClip", "ImageClip", "ColorClip", "TextClip", "AudioClip", "SubtitlesClip"):
        assert clip in kinds
