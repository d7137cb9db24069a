"""One caption model for every kind that draws captions (`compose.caption_style`): a preset
that each field adjusts, checked with every problem at once, drawn the same by a subtitle job
and a compose job's subtitles clip."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from redis.asyncio import Redis

from tests.conftest import fetch, upload_job, watch
from tests.media import Clip, gray_frame
from tests.test_compose import frame_at, post_job
from tests.test_gateway import gw, upload
from vidstream.compose.caption_style import CaptionStyle, ass_colour
from vidstream.core.settings import Settings
from vidstream.media.captions import to_ass_styled
from vidstream.media.subtitles import Cue, build_cues
from vidstream.media.transcript import Segment, Transcript, Word
from vidstream.runtime import Stack


def test_a_preset_is_what_each_field_adjusts() -> None:
    assert CaptionStyle().look() == CaptionStyle(style="default").look()
    bold = CaptionStyle(style="bold", color="#ff0", font="Liberation Serif").look()
    assert (bold.size, bold.bold, bold.colour, bold.font) == (0.075, True, "&H0000FFFF",
                                                              "Liberation Serif")  # fmt: skip
    boxed = CaptionStyle(box="#00000080", position="top").look()
    assert (boxed.border_style, boxed.back_colour, boxed.alignment) == (4, "&H7F000000", 8)
    assert ass_colour("#1e90ffff") == "&H00FF901E"  # opaque: ASS alpha 00; blue, green, red


@pytest.mark.parametrize(
    ("x", "y", "margins"),
    [
        (0.5, 0.5, (50, 50, 400)),  # centred: the default block, its bottom half-way down
        (0.6, 0.5, (100, 0, 400)),  # the same block moved right, up to the picture's edge
        (0.0, 0.9, (0, 100, 80)),  # a corner: the block stays whole, in the picture
        (0.5, 0.0, (50, 50, 745)),  # the very top: raised no higher than keeps the line in
    ],
)
def test_a_point_moves_the_captions_there(
    x: float, y: float, margins: tuple[int, int, int]
) -> None:
    """{"x", "y"}: the captions' block (as wide as ever) centred on x where the picture allows,
    its bottom at y where the cue's lines still fit."""
    look = CaptionStyle.model_validate({"position": {"x": x, "y": y}}).look()
    document = to_ass_styled([(Cue(0, 1, ("hi",)), ())], 1000, 800, look)
    style = next(line for line in document.splitlines() if line.startswith("Style:"))
    margin_l, margin_r, margin_v = style.split(",")[-4:-1]
    assert (int(margin_l), int(margin_r), int(margin_v)) == margins


async def test_every_problem_is_told_at_once(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession
) -> None:
    """A subtitle job's caption fields and a timeline's subtitles clip are checked by the same
    model: every problem in one answer, each with where it is."""
    async with Stack(make_settings(), ("gateway",)) as api:
        key = await upload(http, api, b"\0" * 1000)
        wrong = {"max_lines": 4, "color": "yellow", "position": "left", "font": "Comic Sans"}
        async with http.post(f"{gw(api)}/v1/jobs", json={"source": {"key": key}, **wrong}) as r:
            body = await r.json()
        assert r.status == 400 and body["error"]["code"] == "invalid_request", body
        assert sorted(d["path"] for d in body["error"]["details"]) == sorted(wrong)
        assert "a colour is #RGB, #RRGGBB or #RRGGBBAA" in body["error"]["message"]

        clip = {"type": "subtitles", "key": "uploads/x.srt", "start": 0, "duration": 1, **wrong}
        timeline = {"tracks": [{"clips": [clip]}]}
        async with await post_job(http, api, {"timeline": timeline}) as r:
            body = await r.json()
        assert r.status == 422, body
        paths = {d["path"] for d in body["error"]["details"]}
        assert {f"timeline.tracks[0].clips[0].{name}" for name in wrong} <= paths, paths


def _coloured(picture: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(np.abs(picture.astype(int) - np.array(colour)) <= 60, axis=2)


@pytest.mark.slow  # Whisper and a burn
async def test_a_subtitle_job_draws_the_style_it_asked_for(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip, tmp_path: Path
) -> None:
    """Yellow letters on a blue box, half-way down: drawn there, in those colours, nowhere
    near the bottom; the ASS file carries the same style."""
    assert stack.gateway is not None
    job = await upload_job(http, stack.gateway.url, clip.path, position="0.5,0.6",
                           color="#ffff00", box="#0000ff", size="0.07",
                           formats="json,srt,ass")  # fmt: skip
    assert job["options"]["color"] == "#ffff00" and job["options"]["position"] == {
        "x": 0.5,
        "y": 0.6,
    }
    assert (await watch(job))[-1]["event"] == "completed"
    async with http.get(job["links"]["self"]) as r:
        outputs = (await r.json())["outputs"]
    ass = (await fetch(http, outputs["ass"]["url"])).decode()
    assert ",&H0000FFFF," in ass and ",&H00FF0000," in ass  # the text's and the box's colours
    video = tmp_path / "out.mp4"
    video.write_bytes(await fetch(http, outputs["video"]["url"]))
    await asyncio.to_thread(_drawn_as_asked, video, clip)


def _drawn_as_asked(video: Path, clip: Clip) -> None:
    middle = (clip.spoken[1].start + clip.spoken[1].end) / 2
    changed = np.abs(gray_frame(video, middle) - gray_frame(clip.path, middle)) > 48
    height = changed.shape[0]
    band = slice(int(height * 0.35), int(height * 0.62))
    assert changed[band].mean() > 0.03 and changed[int(height * 0.75) :].mean() < 0.002
    picture = frame_at(video, middle)[band]
    blue, yellow = _coloured(picture, (0, 0, 255)), _coloured(picture, (255, 255, 0))
    assert blue.mean() > 0.05 and yellow.mean() > 0.005, (blue.mean(), yellow.mean())


@pytest.mark.slow  # a compose render
async def test_a_compose_clip_takes_the_same_fields(
    stack: Stack, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A subtitles clip from an SRT file, `position: top` and green letters over a grey
    colour clip: green in the top third, nothing drawn below it."""
    key = await upload(http, stack, b"1\n00:00:00,000 --> 00:00:02,000\nHELLO THERE\n", "a.srt")
    clips: list[dict[str, Any]] = [
        {"type": "color", "color": "#808080", "start": 0, "duration": 2},
        {"type": "subtitles", "key": key, "start": 0, "duration": 2, "position": "top",
         "color": "#00ff00", "size": 0.1, "outline": 0},
    ]  # fmt: skip
    timeline = {"output": {"width": 320, "height": 240}, "tracks": [{"clips": clips}]}
    async with await post_job(http, stack, {"timeline": timeline}) as r:
        job = await r.json()
        assert r.status == 202, job
    assert (await watch(job))[-1]["event"] == "completed"
    async with http.get(job["links"]["self"]) as r:
        outputs = (await r.json())["outputs"]
    video = tmp_path / "out.mp4"
    video.write_bytes(await fetch(http, outputs["video"]["url"]))
    picture = await asyncio.to_thread(frame_at, video, 1.0)
    green = _coloured(picture, (0, 255, 0))
    assert green[:80].mean() > 0.01 and green[80:].mean() == 0, green[:80].mean()


def test_cue_durations_follow_the_fields() -> None:
    """A long run of words without a pause: no cue longer than `max_duration`; a lone short
    word held for `min_duration`."""
    words = tuple(Word(f"w{i}", i * 0.3, i * 0.3 + 0.25) for i in range(40))
    transcript = Transcript("en", 12.0, (Segment(0.0, 12.0, "", words),))
    style = CaptionStyle(max_duration=2.0, max_chars_per_line=80, max_lines=3)
    cues = build_cues(transcript, style.layout())
    assert cues and max(c.end - c.start for c in cues) <= 2.0
    lone = Transcript("en", 5.0, (Segment(1.0, 1.1, "", (Word("hi", 1.0, 1.1),)),))
    [cue] = build_cues(lone, CaptionStyle(min_duration=2.5).layout())
    assert cue.end - cue.start == pytest.approx(2.5)
