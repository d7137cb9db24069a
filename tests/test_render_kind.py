"""The render kind: a finished job's video rendered again with its transcript as the user
corrected it (its JSON in the request, or an uploaded JSON, SRT or WebVTT file), without
transcribing again. Checked whole before anything is queued; what is burnt in is the corrected
text (read back by OCR); the original job, which owns the source, outlives the render job's
needs, and the render job's removal leaves the source alone.

The finished jobs rendered again are made here as a transcribe worker would finish them (its
two protocol steps, with a hand-written transcript): only the render worker, FFmpeg and the
gateway run. One slow test goes through Whisper as a user would."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from redis.asyncio import Redis

from tests.conftest import fetch, upload_job, watch
from tests.media import FFMPEG, parse_cues, spoken_over_grey, words_of
from tests.test_compose import frame_at, ocr
from tests.test_gateway import expect_error
from vidstream.core.settings import Settings
from vidstream.job.kinds import ComposeOptions, Kind
from vidstream.job.model import Job, Output, Stage
from vidstream.job.protocol import Claim, FinishStage
from vidstream.kinds.render import corrected
from vidstream.media.probe import probe
from vidstream.media.transcript import Segment, Transcript, Word
from vidstream.ops.retention import Retention
from vidstream.runtime import Stack
from vidstream.storage.names import transcript_key

A_KEY, B_KEY = "vs_render0a_tenant-a-key-for-the-render-tests", "vs_render0b_tenant-b-key"
A, B = {"Authorization": f"Bearer {A_KEY}"}, {"Authorization": f"Bearer {B_KEY}"}
RETAIN_S = 3600
SAID = "Hello world"  # what the finished job's transcript says, word by word
FIXED = "Purple elephants dance"  # what its user corrected it to


# -- the corrected transcript, pure -------------------------------------------------------------


def transcript_of(text: str, start: float = 0.3, end: float = 3.7) -> Transcript:
    """One segment saying `text`, its words spread evenly over it (as Whisper times them)."""
    words = text.split()
    step = (end - start) / len(words)
    timed = tuple(Word(w, start + i * step, start + (i + 1) * step) for i, w in enumerate(words))
    return Transcript("en", 4.0, (Segment(start, end, text, timed),), "tiny.en")


def edited(text: str) -> dict[str, Any]:
    """The finished job's transcript JSON with its segment's text changed, its words not."""
    document: dict[str, Any] = json.loads(transcript_of(SAID).to_json())
    document["segments"][0]["text"] = text
    return document


def test_a_corrected_segment_says_its_text_not_its_old_words() -> None:
    """Words left from before the correction no longer time the segment: its text is shown."""
    fixed = corrected(json.dumps(edited(FIXED)).encode())
    assert fixed.text == FIXED and fixed.segments[0].words == ()
    kept = corrected(transcript_of(SAID).to_json())  # untouched: Whisper's timings stay
    assert kept.segments[0].words == transcript_of(SAID).segments[0].words


@pytest.mark.parametrize(
    "document",
    [
        b"1\n00:00:00,300 --> 00:00:03,700\nPurple elephants\ndance\n",
        b"WEBVTT\n\nNOTE fixed\n\n00:00.300 --> 00:03.700\nPurple elephants dance\n",
    ],
)
def test_srt_and_webvtt_cues_become_segments(document: bytes) -> None:
    """Each cue is a segment of the corrected transcript, its lines one text."""
    fixed = corrected(document)
    assert [(s.start, s.end, s.text) for s in fixed.segments] == [(0.3, 3.7, FIXED)]


@pytest.mark.parametrize(
    ("document", "needle"),
    [
        (b'{"segments": []}', "no text"),
        (b'{"segments": [{"start": 0, "end": "x", "text": "a"}]}', "malformed"),
        (b"not subtitles at all", "No subtitles found"),
    ],
)
def test_a_transcript_that_cannot_be_shown_is_refused(document: bytes, needle: str) -> None:
    with pytest.raises(Exception, match=needle) as refused:
        corrected(document)
    assert getattr(refused.value, "code", "") == "invalid_subtitles"


# -- against the gateway and a render worker ----------------------------------------------------


@pytest.fixture(scope="session")
def plain_video(media_dir: Path) -> Path:
    """Four seconds of dark grey at 720p with a quiet tone: subtitles on it read well by OCR."""
    path = media_dir / "grey.mp4"
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=0x303030:s=1280x720:r=25:d=4",
         "-f", "lavfi", "-i", "sine=frequency=300:duration=4", "-c:v", "libx264", "-preset",
         "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.fixture
async def stack(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Stack]:
    """Two tenants' gateway, the notifier and a render worker (no Whisper)."""
    settings = make_settings(
        auth="on", api_keys=f"a:{A_KEY},b:{B_KEY}", job_retention_s=RETAIN_S,
        x264_preset="ultrafast",
    )  # fmt: skip
    async with Stack(settings, ("gateway", "notifier", "render")) as running:
        yield running


def gw(stack: Stack) -> str:
    assert stack.gateway is not None
    return stack.gateway.url


async def upload(
    http: aiohttp.ClientSession, stack: Stack, data: bytes, name: str, as_: dict[str, str] = A
) -> str:
    body = {"filename": name, "size": len(data)}
    async with http.post(f"{gw(stack)}/v1/uploads", json=body, headers=as_) as r:
        assert r.status == 201, await r.text()
        ticket: dict[str, Any] = await r.json()
    body_io = io.BytesIO(data)  # (aiohttp warns of large bytes sent as they are)
    async with http.put(ticket["upload_url"], data=body_io, headers=ticket["headers"]) as r:
        assert r.status == 200, await r.text()
    return str(ticket["key"])


async def finished(
    http: aiohttp.ClientSession, stack: Stack, video: Path, **fields: Any
) -> dict[str, Any]:
    """A transcribe job of tenant a's (with the request `fields`), completed with a transcript
    saying `SAID`."""
    services = stack.services
    assert services is not None
    key = await upload(http, stack, video.read_bytes(), "holiday.mp4")
    request = {"kind": "transcribe", "source": {"key": key}, **fields}
    async with http.post(f"{gw(stack)}/v1/jobs", json=request, headers=A) as r:
        assert r.status == 202, await r.text()
        job_id = (await r.json())["id"]
    transcript, owner = transcript_of(SAID).to_json(), "host-transcribe-0:r1"
    info = await services.store.put_stream(
        transcript_key(job_id, "json", "r1"), _once(transcript), "application/json", 1 << 20
    )
    local = services.store.local_path(key)
    assert local is not None
    media = await probe(local, 30.0)
    job = await services.jobs.get(job_id)
    assert job is not None
    claim = Claim.of(job, Stage.TRANSCRIBE, owner=owner, lease_ms=30_000, max_attempts=3)
    assert (await services.jobs.apply(job_id, claim)).ok
    outputs = {"transcript": Output(info.key, info.size, "application/json")}
    finish = FinishStage.of(job, Stage.TRANSCRIBE, outputs, owner=owner, media=media)
    assert (await services.jobs.apply(job_id, finish)).ok
    async with http.get(f"{gw(stack)}/v1/jobs/{job_id}", headers=A) as r:
        body: dict[str, Any] = await r.json()
    assert body["status"] == "completed", body
    return body


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def render(
    http: aiohttp.ClientSession, stack: Stack, body: dict[str, Any], as_: dict[str, str] = A
) -> aiohttp.ClientResponse:
    return await http.post(f"{gw(stack)}/v1/jobs", json={"kind": "render", **body}, headers=as_)


def burnt_in(video: Path, tmp_path: Path, at_s: float = 2.0) -> str:
    """What OCR reads in the bottom third of the picture at `at_s`, where subtitles sit."""
    picture = frame_at(video, at_s)
    bottom = picture[picture.shape[0] * 2 // 3 :]
    return ocr(bottom, tmp_path)


async def test_the_corrected_transcript_is_what_is_burnt_in(
    stack: Stack, http: aiohttp.ClientSession, plain_video: Path, tmp_path: Path
) -> None:
    """A finished job rendered again with its transcript's JSON corrected in the request shows
    the corrected words, not the old ones; its downloads hold the corrected text; its source is
    the original's, its one stage render, and nothing is transcribed."""
    original = await finished(http, stack, plain_video)
    async with await render(http, stack, {"job": original["id"], "transcript": edited(FIXED)}) as r:
        job = await r.json()
        assert r.status == 202, job
    assert (job["kind"], job["stages"], job["source"]) == ("render", ["render"], original["source"])
    assert job["options"]["job"] == original["id"] and job["options"]["burn_subtitles"] is True
    events = await watch(job, timeout_s=60)
    assert events[-1]["event"] == "completed", events[-1]
    assert [e["stage"] for e in events if e["event"] == "started"] == ["render"]
    async with http.get(job["links"]["self"], headers=A) as r:
        done = await r.json()
    assert set(done["outputs"]) == {"transcript", "srt", "vtt", "video"}
    assert done["media"]["width"] == 1280  # the original's, not probed again
    video = tmp_path / "rendered.mp4"
    video.write_bytes(await fetch(http, done["outputs"]["video"]["url"]))
    seen = set(words_of(await asyncio.to_thread(burnt_in, video, tmp_path)))
    assert {"purple", "elephants", "dance"} <= seen, seen
    assert not {"hello", "world"} & seen, seen
    srt = (await fetch(http, done["outputs"]["srt"]["url"])).decode()
    assert [text for _, _, text in parse_cues(srt)] == [FIXED]
    saved = json.loads(await fetch(http, done["outputs"]["transcript"]["url"]))
    assert saved["text"] == FIXED
    assert done["outputs"]["video"]["url"] != original["outputs"]["transcript"]["url"]


@pytest.fixture(scope="session")
def keyed_video(media_dir: Path) -> Path:
    """`plain_video` with a keyframe every second: a render can be cut into segments."""
    path = media_dir / "grey-keyed.mp4"
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=0x303030:s=1280x720:r=25:d=4",
         "-f", "lavfi", "-i", "sine=frequency=300:duration=4", "-c:v", "libx264", "-preset",
         "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )  # fmt: skip
    return path


async def test_a_render_job_in_segments_burns_the_corrected_words_in_each(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    keyed_video: Path, tmp_path: Path,
) -> None:  # fmt: skip
    """Fanned out (FANOUT_MIN_S lowered), each segment of a render job draws the corrected
    transcript it was given, not the original job's: the cue across the cut on both sides."""
    settings = make_settings(
        auth="on", api_keys=f"a:{A_KEY},b:{B_KEY}", x264_preset="ultrafast",
        fanout_min_s=2.0, piece_s=5.0, concurrency=2,
    )  # fmt: skip
    async with Stack(settings, ("gateway", "notifier", "render")) as stack:
        original = await finished(http, stack, keyed_video)
        body = {"job": original["id"], "transcript": edited(FIXED)}
        async with await render(http, stack, body) as r:
            job = await r.json()
            assert r.status == 202, job
        events = await watch(job, timeout_s=60)
        assert events[-1]["event"] == "completed", events[-1]
        assert {e["pieces"]["total"] for e in events if "pieces" in e} == {2}
        async with http.get(job["links"]["self"], headers=A) as r:
            done = await r.json()
        video = tmp_path / "rendered.mp4"
        video.write_bytes(await fetch(http, done["outputs"]["video"]["url"]))
    for at in (1.0, 3.0):  # either side of the cut at 2 s
        seen = set(words_of(await asyncio.to_thread(burnt_in, video, tmp_path, at)))
        assert {"purple", "elephants", "dance"} <= seen and not {"hello", "world"} & seen, seen


async def test_uploaded_captions_render_a_render_jobs_source_again_as_a_track(
    stack: Stack, http: aiohttp.ClientSession, plain_video: Path, tmp_path: Path
) -> None:
    """Corrected captions uploaded as SRT, naming a render job: the original job's source is
    rendered again, with the captions as a subtitle track and the VTT asked for."""
    original = await finished(http, stack, plain_video)
    async with await render(http, stack, {"job": original["id"], "transcript": edited(FIXED)}) as r:
        first = await r.json()
    assert (await watch(first, timeout_s=60))[-1]["event"] == "completed"
    srt = b"1\n00:00:00,500 --> 00:00:03,500\nGreen giraffes sing\n"
    key = await upload(http, stack, srt, "fixed.srt")
    body = {"job": first["id"], "captions": {"key": key}, "burn_subtitles": False,
            "formats": ["vtt"]}  # fmt: skip
    async with await render(http, stack, body) as r:
        again = await r.json()
        assert r.status == 202, again
    assert again["options"]["job"] == original["id"]  # the job whose source it is
    assert again["source"] == original["source"]
    assert (await watch(again, timeout_s=60))[-1]["event"] == "completed"
    async with http.get(again["links"]["self"], headers=A) as r:
        done = await r.json()
    assert set(done["outputs"]) == {"transcript", "vtt", "video"}
    vtt = (await fetch(http, done["outputs"]["vtt"]["url"])).decode()
    assert [text for _, _, text in parse_cues(vtt)] == ["Green giraffes sing"]
    video = tmp_path / "soft.mp4"
    video.write_bytes(await fetch(http, done["outputs"]["video"]["url"]))
    with av.open(str(video)) as container:
        assert [s.type for s in container.streams].count("subtitle") == 1
    async with await render(http, stack, {"job": original["id"], "captions": {"key": key}}) as r:
        assert "No upload of yours" in await expect_error(r, 400, "source_not_found")  # used


async def test_a_correction_keeps_the_look_of_the_job_it_corrects(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    plain_video: Path,
) -> None:  # fmt: skip
    """A render request that says nothing of the captions draws them as the job it corrects
    did (its style, layout, track or burn, files); one that sets any caption field gives the
    whole look anew."""
    settings = make_settings(auth="on", api_keys=f"a:{A_KEY},b:{B_KEY}")
    async with Stack(settings, ("gateway",)) as stack:
        look = {"position": "top", "color": "#ffff00", "max_chars_per_line": 20,
                "burn_subtitles": False, "formats": ["json", "ass"]}  # fmt: skip
        original = await finished(http, stack, plain_video, **look)
        body = {"job": original["id"], "transcript": edited(FIXED)}
        async with await render(http, stack, body) as r:
            job = await r.json()
            assert r.status == 202, job
        assert {k: job["options"].get(k) for k in look} == look
        async with await render(http, stack, {**body, "style": "bold"}) as r:
            anew = (await r.json())["options"]
        assert anew["style"] == "bold" and "position" not in anew and "color" not in anew


async def test_a_render_request_is_checked_whole_before_it_is_queued(
    stack: Stack, http: aiohttp.ClientSession, plain_video: Path
) -> None:
    """Each thing wrong with a render request is a 4xx naming it, and queues nothing."""
    services = stack.services
    assert services is not None
    original = await finished(http, stack, plain_video)
    ok = {"job": original["id"]}
    fixed = {**ok, "transcript": edited(FIXED)}
    async with await render(http, stack, ok) as r:
        assert "once" in await expect_error(r, 400, "invalid_request")  # no transcript
    srt = await upload(http, stack, b"1\n00:00:01,000 --> 00:00:02,000\nHi\n", "a.srt")
    async with await render(http, stack, {**fixed, "captions": {"key": srt}}) as r:
        assert "once" in await expect_error(r, 400, "invalid_request")  # both
    async with await render(http, stack, {**ok, "transcript": [1, 2]}) as r:
        assert "JSON object" in await expect_error(r, 400, "invalid_request")
    async with await render(http, stack, {**ok, "transcript": {"segments": "x"}}) as r:
        await expect_error(r, 400, "invalid_subtitles")
    async with await render(http, stack, {**fixed, "colour": "red"}) as r:
        assert "render job: 'colour'" in await expect_error(r, 400, "invalid_request")
    async with await render(http, stack, {"transcript": edited(FIXED)}) as r:
        assert "job is required" in await expect_error(r, 400, "invalid_request")
    async with await render(http, stack, {**fixed, "job": "01m84sn4y6skg5d13wt97wbts0"}) as r:
        await expect_error(r, 404, "not_found")
    async with await render(http, stack, fixed, as_=B) as r:  # another tenant's job
        await expect_error(r, 404, "not_found")
    other = await upload(http, stack, b"1\n00:00:01,000 --> 00:00:02,000\nHi\n", "b.srt", B)
    async with await render(http, stack, {**ok, "captions": {"key": other}}) as r:
        await expect_error(r, 400, "source_not_found")  # another tenant's upload
    big = await upload(http, stack, b"1\n00:00:01,000 --> 00:00:02,000\n" + b"x" * (9 << 20),
                       "big.srt")  # fmt: skip
    async with await render(http, stack, {**ok, "captions": {"key": big}}) as r:
        await expect_error(r, 413, "too_large")
    async with await render(http, stack, {**ok, "captions": {"key": srt}, "formats": ["pdf"]}) as r:
        await expect_error(r, 400, "invalid_request")
    queued_key = await upload(http, stack, plain_video.read_bytes(), "later.mp4")
    async with http.post(f"{gw(stack)}/v1/jobs", json={"source": {"key": queued_key}},
                         headers=A) as r:  # fmt: skip
        queued = await r.json()
    async with await render(http, stack, {**fixed, "job": queued["id"]}) as r:
        assert "queued" in await expect_error(r, 409, "conflict")
    form = aiohttp.FormData({"kind": "render"})
    form.add_field("file", b"x", filename="a.mp4")
    async with http.post(f"{gw(stack)}/v1/jobs", data=form, headers=A) as r:
        assert "render job is JSON" in await expect_error(r, 400, "invalid_request")
    listed = await services.jobs.recent("a", 50)
    assert {j.kind.value for j in listed} == {"transcribe", "subtitle"}  # no render job made
    # The captions a refused request took are given back: they still serve one job.
    async with await render(http, stack, {**ok, "captions": {"key": srt}}) as r:
        assert r.status == 202, await r.text()


async def test_the_original_job_keeps_the_source_for_the_render_job(
    stack: Stack, http: aiohttp.ClientSession, plain_video: Path, redis: Redis
) -> None:
    """Rendering again keeps the original job (and its source) at least JOB_RETENTION_S longer;
    removing the render job leaves the source, which goes with the original job."""
    services = stack.services
    assert services is not None
    original = await finished(http, stack, plain_video)
    # Its own retention nearly over, as if it had ended long ago.
    assert await redis.zadd(services.keys.retention, {original["id"]: time.time() + 5}, xx=True,
                            ch=True)  # fmt: skip
    asked = time.time()
    async with await render(http, stack, {"job": original["id"], "transcript": edited(FIXED)}) as r:
        job = await r.json()
    assert (await watch(job, timeout_s=60))[-1]["event"] == "completed"
    due = await redis.zscore(services.keys.retention, original["id"])
    assert due is not None and due >= asked + RETAIN_S - 1
    own_due = await redis.zscore(services.keys.retention, job["id"])
    assert own_due is not None
    source = services.store.local_path(original["source"]["key"])
    assert source is not None
    retention = Retention(redis, services.keys, services.store, keep_outputs=False)
    assert await services.jobs.keep(original["id"], own_due + 60)  # the render job goes first
    assert (await retention.sweep(now=own_due + 1)).jobs == 1
    assert await services.jobs.get(job["id"]) is None
    assert source.exists()  # not the render job's to delete
    assert (await retention.sweep(now=own_due + 61)).jobs == 1
    assert not source.exists()  # its owner's: gone with it


@pytest.fixture(scope="session")
def spoken_on_grey(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sentence spoken over dark grey at 720p."""
    sentence = ("Please open the window and let the fresh air in.",)
    return spoken_over_grey(tmp_path_factory.mktemp("spoken"), sentence, "spoken-grey.mp4")[0]


@pytest.mark.slow  # real Whisper
async def test_a_subtitle_jobs_transcript_corrected_and_rendered_again(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    spoken_on_grey: Path, tmp_path: Path,
) -> None:  # fmt: skip
    """End to end as a user does it: a subtitled video, its transcript downloaded, a word in
    it corrected, rendered again: the correction is burnt in, and nothing was transcribed."""
    async with Stack(make_settings()) as stack:
        assert stack.gateway is not None
        first = await upload_job(http, stack.gateway.url, spoken_on_grey)
        assert (await watch(first))[-1]["event"] == "completed"
        async with http.get(first["links"]["self"]) as r:
            done = await r.json()
        heard = json.loads(await fetch(http, done["outputs"]["transcript"]["url"]))
        segment = next(s for s in heard["segments"] if "window" in s["text"].lower())
        segment["text"] = "Please open the DOOR and let the fresh air in."
        request = {"kind": "render", "job": first["id"], "transcript": heard}
        async with http.post(f"{stack.gateway.url}/v1/jobs", json=request) as r:
            job = await r.json()
            assert r.status == 202, job
        events = await watch(job)
        assert events[-1]["event"] == "completed", events[-1]
        assert [e["stage"] for e in events if e["event"] == "started"] == ["render"]
        async with http.get(job["links"]["self"]) as r:
            again = await r.json()
        video = tmp_path / "again.mp4"
        video.write_bytes(await fetch(http, again["outputs"]["video"]["url"]))
    at = (segment["start"] + segment["end"]) / 2
    seen = await asyncio.to_thread(burnt_in, video, tmp_path, at)
    assert "door" in seen and "window" not in seen, seen


async def test_a_compose_job_is_not_rendered_again(
    stack: Stack, http: aiohttp.ClientSession, plain_video: Path
) -> None:
    """A compose job whose voice was transcribed has one of its clips as its source: rendering
    it again would burn subtitles onto that clip, not the composed video. It is a 400."""
    services = stack.services
    assert services is not None
    key = await upload(http, stack, plain_video.read_bytes(), "voice.mp4")
    job = Job.new(key, ComposeOptions(transcribe="talk"), tenant="a", kind=Kind.COMPOSE)
    await services.jobs.create(job)
    owner = "host-render-0:r1"
    claim = Claim.of(job, Stage.TRANSCRIBE, owner=owner, lease_ms=30_000, max_attempts=3)
    assert (await services.jobs.apply(job.id, claim)).ok
    assert (await services.jobs.apply(job.id, FinishStage.of(job, Stage.TRANSCRIBE, {},
                                                             owner=owner))).ok  # fmt: skip
    claim = Claim.of(job, Stage.RENDER, owner=owner, lease_ms=30_000, max_attempts=3)
    assert (await services.jobs.apply(job.id, claim)).ok
    assert (await services.jobs.apply(job.id, FinishStage.of(job, Stage.RENDER, {},
                                                             owner=owner))).ok  # fmt: skip
    async with await render(http, stack, {"job": job.id, "transcript": edited(FIXED)}) as r:
        assert "no video of its own" in await expect_error(r, 400, "invalid_request")


async def test_a_job_due_for_removal_is_not_rendered_again(
    stack: Stack, http: aiohttp.ClientSession, plain_video: Path, redis: Redis
) -> None:
    """Retention may be deleting a due job's files at this moment: keeping it longer then would
    keep a record whose source is gone. Rendering it again is `source_not_found`."""
    services = stack.services
    assert services is not None
    original = await finished(http, stack, plain_video)
    await redis.zadd(services.keys.retention, {original["id"]: time.time() - 1}, xx=True)
    async with await render(http, stack, {"job": original["id"], "transcript": edited(FIXED)}) as r:
        await expect_error(r, 400, "source_not_found")
