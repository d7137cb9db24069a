"""Probing real files made here with FFmpeg: what vidstream accepts, and what it tells users."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.media import FFMPEG
from vidstream.errors import InvalidMedia
from vidstream.media.probe import probe

PICTURE = ("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25")
SOUND = ("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100")
X264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True)


@dataclass(frozen=True)
class Files:
    good: Path
    rotated: Path
    silent: Path
    audio_only: Path
    empty: Path
    truncated: Path
    damaged: Path
    text_txt: Path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    d = tmp_path_factory.mktemp("probe")
    good, faststart = d / "good.mp4", d / "faststart.mp4"
    ffmpeg(*PICTURE, *SOUND, "-t", "1", *X264, "-c:a", "aac", str(good))
    ffmpeg("-i", str(good), "-c", "copy", "-movflags", "+faststart", str(faststart))
    rotated = d / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(good), "-c", "copy", str(rotated))
    silent = d / "silent.mp4"
    ffmpeg(*PICTURE, "-t", "1", *X264, str(silent))
    audio_only = d / "audio.m4a"
    ffmpeg(*SOUND, "-t", "1", "-c:a", "aac", str(audio_only))
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    # The index (moov) of a plain MP4 is at its end: the first half alone cannot be opened.
    data = good.read_bytes()
    truncated = d / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    # With the index first, a file cut inside the first frame opens but does not decode.
    data = faststart.read_bytes()
    damaged = d / "damaged.mp4"
    damaged.write_bytes(data[: data.index(b"mdat") + 500])
    text_txt = d / "notes.txt"
    text_txt.write_text("These are my notes for the meeting, not a video.\n" * 20)
    return Files(good, rotated, silent, audio_only, empty, truncated, damaged, text_txt)


async def invalid(path: Path) -> str:
    """The message a user is shown for `path`, which must be refused as invalid media."""
    with pytest.raises(InvalidMedia) as err:
        await probe(path, timeout_s=30)
    assert err.value.code == "invalid_media"
    message = err.value.message
    assert "Traceback" not in message and str(path.parent) not in message, message
    assert message[0].isupper() and message.endswith("."), message
    return message


async def test_a_video_with_sound(files: Files) -> None:
    """A normal MP4 is accepted with its duration, size and codecs."""
    info = await probe(files.good, timeout_s=30)
    assert info.duration == pytest.approx(1.0, abs=0.1)
    assert (info.width, info.height, info.rotation) == (160, 120, 0)
    assert info.display_size == (160, 120)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert info.audio_channels == 1 and info.sample_rate == 44100
    assert "mp4" in info.format_name


async def test_a_rotated_phone_video(files: Files) -> None:
    """A video recorded turned by 90 degrees is laid out in its upright, displayed size."""
    info = await probe(files.rotated, timeout_s=30)
    assert info.rotation == 90
    assert (info.width, info.height) == (160, 120)
    assert info.display_size == (120, 160)


async def test_a_text_file_named_mp4(text_file: Path) -> None:
    """A text file with a video's name is refused as not a video."""
    assert "could not be read as a video" in await invalid(text_file)


async def test_a_text_file_named_txt(files: Files) -> None:
    """A text document uploaded as notes.txt is refused as not a video, not as a silent one."""
    assert "could not be read as a video" in await invalid(files.text_txt)


async def test_a_video_without_sound(files: Files) -> None:
    """A silent video is refused: there is nothing to transcribe."""
    assert "no audio track" in await invalid(files.silent)


async def test_sound_without_video(files: Files) -> None:
    """An audio-only file is refused: there is no picture to put subtitles on."""
    assert "no video track" in await invalid(files.audio_only)


async def test_an_empty_file(files: Files) -> None:
    """An empty upload is refused as unreadable."""
    assert "could not be read as a video" in await invalid(files.empty)


async def test_a_truncated_mp4(files: Files) -> None:
    """Half an MP4 (its index missing) is refused as unreadable."""
    assert "could not be read as a video" in await invalid(files.truncated)


async def test_a_damaged_mp4(files: Files) -> None:
    """An MP4 whose first frame is cut off is refused as damaged."""
    assert "damaged" in await invalid(files.damaged)


async def test_a_damaged_mp4_message_has_no_internals(files: Files) -> None:
    """The damaged-file message shows no error numbers or FFmpeg function names."""
    message = await invalid(files.damaged)
    assert "Errno" not in message and "avcodec" not in message, message


async def test_a_missing_file(tmp_path: Path) -> None:
    """A source that vanished is refused with a readable reason, not a crash."""
    assert "could not be read as a video" in await invalid(tmp_path / "gone.mp4")
