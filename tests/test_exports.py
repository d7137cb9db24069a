"""A transcript's exports beside JSON, SRT and VTT: ASS (as a burn would lay it out) and plain
text, end to end through the real roles."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import cli, fetch, upload_job, watch
from tests.media import Clip, words_of
from vidstream.cli.get import TRANSCRIPT_FORMATS
from vidstream.job.options import ALL_FORMATS
from vidstream.runtime import Stack

pytestmark = pytest.mark.slow  # Whisper loads


async def test_a_transcript_comes_as_ass_and_plain_text_too(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip, tmp_path: Path
) -> None:
    """`formats: ass, txt`: an ASS file with one event per cue, laid out for the picture, and
    the transcript's words as plain text; SRT and VTT not asked, not stored."""
    assert stack.gateway is not None
    job = await upload_job(http, stack.gateway.url, clip.path, kind="transcribe",
                           formats="ass,txt")  # fmt: skip
    assert job["options"]["formats"] == ["json", "ass", "txt"]
    assert (await watch(job))[-1]["event"] == "completed"
    async with http.get(job["links"]["self"]) as r:
        outputs = (await r.json())["outputs"]
    assert set(outputs) == {"transcript", "ass", "txt"}
    assert outputs["ass"]["content_type"] == "text/x-ssa"
    assert outputs["txt"]["content_type"].startswith("text/plain")
    transcript = json.loads(await fetch(http, outputs["transcript"]["url"]))
    text = (await fetch(http, outputs["txt"]["url"])).decode()
    assert text == transcript["text"] + "\n"
    assert sum(w in words_of(text) for w in clip.words) / len(clip.words) >= 0.75
    ass = (await fetch(http, outputs["ass"]["url"])).decode()
    assert re.findall(r"^\[([^\]]+)\]$", ass, re.M) == ["Script Info", "V4+ Styles", "Events"]
    assert "PlayResX: 640" in ass and "PlayResY: 360" in ass  # the clip's picture
    events = [line for line in ass.splitlines() if line.startswith("Dialogue:")]
    assert len(events) >= len(clip.spoken), ass  # a cue per line of speech, at least

    # `vidstream get` saves the same files, under plain names.
    folder = tmp_path / "downloads"
    code, said = await cli({**os.environ}, "get", job["id"], "-o", str(folder), "--gateway",
                           stack.gateway.url)  # fmt: skip
    assert code == 0, said
    saved = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(saved) == {"transcript.json", "transcript.ass", "transcript.txt"}, said
    assert saved["transcript.txt"] == text.encode() and saved["transcript.ass"] == ass.encode()


async def test_an_unknown_format_names_the_choices(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip
) -> None:
    assert stack.gateway is not None
    form = aiohttp.FormData()
    form.add_field("formats", "docx")
    form.add_field("file", io.BytesIO(clip.path.read_bytes()), filename="clip.mp4",
                   content_type="video/mp4")  # fmt: skip
    async with http.post(f"{stack.gateway.url}/v1/jobs", data=form) as r:
        body = await r.json()
    assert r.status == 400 and "json, srt, vtt, ass, txt" in body["error"]["message"], body


def test_vidstream_get_names_every_transcript_format() -> None:
    """`vidstream get` saves each transcript format as transcript.<format>: it knows them all."""
    assert TRANSCRIPT_FORMATS == ALL_FORMATS
