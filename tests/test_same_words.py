"""The same sound, the same words: a clip whose speech makes Whisper fall back to sampling (a
list read in one pattern) is transcribed word for word the same by the same server twice and by
another server, so a retry or a re-render never changes the transcript."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from tests.media import make_clip
from vidstream.media.ffmpeg import resolve_binary
from vidstream.media.transcript import Segment
from vidstream.media.whisper import TranscribeRequest, WhisperConfig, WhisperPool

pytestmark = pytest.mark.slow  # Whisper, three times

# Said alike thirty times over: Whisper's checks reject its first decodes of such a window
# (too repetitive) and it samples at higher temperatures, differently on every run before.
LIST = tuple(f"This is sentence number {i} of the test." for i in range(1, 31))


async def _heard(pool: WhisperPool, path: Path) -> str:
    async def ignore(segment: Segment) -> None:
        del segment

    request = TranscribeRequest(path, "mov", "en", 0.0, 60.0, duration=60.0)
    heard = await pool.transcribe(request, ignore, structlog.get_logger())
    return heard.transcript.text


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("list"), "list.mp4", size="160x90",
                     sentences=LIST).path  # fmt: skip


async def test_a_list_read_in_one_pattern_is_heard_the_same_every_time(listed: Path) -> None:
    config = WhisperConfig(ffmpeg=resolve_binary("auto"))
    async with WhisperPool(config, size=1) as first:
        once, twice = await _heard(first, listed), await _heard(first, listed)
    async with WhisperPool(config, size=1) as other:
        elsewhere = await _heard(other, listed)
    assert once == twice == elsewhere, (once, twice, elsewhere)
    # And the list is heard, not dropped: the first minute holds about 18 of its sentences.
    assert len(once.split()) >= 120 and " 15 " in once, once
