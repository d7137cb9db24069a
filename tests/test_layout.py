"""Captions people can shape (issue 20): a line's length, the lines a caption has, and where
burnt-in captions sit, checked at the gateway and seen in the rendered video."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from redis.asyncio import Redis

from tests.conftest import fetch, upload_job, watch
from tests.media import Clip, gray_frame, parse_cues
from tests.test_compose import frame_at, ocr
from tests.test_gateway import expect_error, gw, upload
from vidstream.core.settings import Settings
from vidstream.runtime import Stack


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (
            {"max_chars_per_line": 5},
            "max_chars_per_line: Input should be greater than or equal to 10",
        ),
        ({"max_chars_per_line": "twenty"}, "max_chars_per_line: Input should be a valid integer"),
        ({"max_lines": 4}, "max_lines: Input should be less than or equal to 3"),
        (
            {"position": "left"},
            'position must be "bottom", "top", "middle" or {"x": 0..1, "y": 0..1}',
        ),
    ],
)
async def test_a_layout_out_of_bounds_is_refused(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession,
    options: dict[str, Any], needle: str,
) -> None:  # fmt: skip
    async with Stack(make_settings(), ("gateway",)) as api:
        key = await upload(http, api, b"\0" * 1000)
        async with http.post(f"{gw(api)}/v1/jobs", json={"source": {"key": key}, **options}) as r:
            message = await expect_error(r, 400, "invalid_request")
        assert needle in message


async def test_a_layout_is_kept_with_the_job(
    make_settings: Callable[..., Settings], redis: Redis, http: aiohttp.ClientSession
) -> None:
    async with Stack(make_settings(), ("gateway",)) as api:
        key = await upload(http, api, b"\0" * 1000)
        body = {"source": {"key": key}, "max_chars_per_line": "24", "max_lines": 1,
                "position": "top"}  # fmt: skip
        async with http.post(f"{gw(api)}/v1/jobs", json=body) as r:
            job = await r.json()
            assert r.status == 202, job
    assert job["options"] == {"language": "en", "burn_subtitles": True,
                              "formats": ["json", "srt", "vtt"], "max_chars_per_line": 24,
                              "max_lines": 1, "position": "top"}  # fmt: skip


@pytest.mark.slow  # Whisper and a burn
async def test_short_lines_at_the_top(
    stack: Stack, http: aiohttp.ClientSession, clip: Clip, tmp_path: Path
) -> None:
    """`max_chars_per_line: 20`, `position: top`: no caption line in the SRT or drawn in the
    video is longer than 20 characters, and the captions are drawn in the top third."""
    assert stack.gateway is not None
    job = await upload_job(http, stack.gateway.url, clip.path, max_chars_per_line="20",
                           position="top")  # fmt: skip
    assert (await watch(job))[-1]["event"] == "completed"
    async with http.get(job["links"]["self"]) as r:
        outputs = (await r.json())["outputs"]
    srt = (await fetch(http, outputs["srt"]["url"])).decode()
    lines = [line for line in srt.splitlines() if line and not line.isdigit() and "-->" not in line]
    assert len(parse_cues(srt)) < len(lines)  # some captions took two lines
    video = tmp_path / "out.mp4"
    video.write_bytes(await fetch(http, outputs["video"]["url"]))
    await asyncio.to_thread(_short_and_on_top, video, clip, srt, tmp_path)
    assert lines and all(len(line) <= 20 for line in lines), lines


def _short_and_on_top(video: Path, clip: Clip, srt: str, tmp_path: Path) -> None:
    middle = (clip.spoken[1].start + clip.spoken[1].end) / 2
    changed = np.abs(gray_frame(video, middle) - gray_frame(clip.path, middle)) > 48
    height = changed.shape[0]
    top, bottom = changed[: height // 3].mean(), changed[height // 2 :].mean()
    assert top > 0.01 and bottom < 0.002, (top, bottom)
    picture = frame_at(video, middle)[: height // 3]
    text = picture.min(axis=2) > 200  # the captions' white letters, black on white for OCR
    plain = np.where(text[..., None], 0, 255).astype(np.uint8).repeat(3, axis=2)
    read = [re.sub(r"[^\w' ]", "", line).strip() for line in ocr(plain, tmp_path).splitlines()]
    read = [line for line in read if line]
    assert read and all(len(line) <= 20 for line in read), read
