"""Probing real files made here with FFmpeg: what vidstream accepts, and what it tells users."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.media import FFMPEG, watch_opens, write_ffconcat, write_hls
from vidstream.core.errors import InvalidMedia, PermanentError, TooLong
from vidstream.media.info import (
    AUDIO_DEMUXERS,
    NAMES_OTHER_FILES,
    VIDEOS_OR_AUDIO,
    MediaInfo,
    accepted,
    check_frame,
    names_other_files,
    refusal,
)
from vidstream.media.probe import check_duration, probe

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
    secret: Path
    playlist: Path
    concat: Path
    picture: Path
    transport: Path


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
    # A media file elsewhere on the disk, and references to it a hostile upload could make.
    secret, transport = d / "secret" / "private.ts", d / "good.ts"
    secret.parent.mkdir()
    ffmpeg(*PICTURE, *SOUND, "-t", "1", *X264, "-c:a", "aac", str(secret))
    ffmpeg("-i", str(good), "-c", "copy", str(transport))
    playlist = write_hls(d / "upload.m3u8", secret)
    concat = write_ffconcat(d / "upload.ffconcat", secret)
    picture = d / "frame.png"
    ffmpeg(*PICTURE, "-frames:v", "1", str(picture))
    return Files(
        good, rotated, silent, audio_only, empty, truncated, damaged, text_txt,
        secret, playlist, concat, picture, transport,
    )  # fmt: skip


async def invalid(path: Path, need_video: bool = True) -> str:
    """The message a user is shown for `path`, which must be refused as invalid media."""
    with pytest.raises(InvalidMedia) as err:
        await probe(path, timeout_s=30, need_video=need_video)
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


# -- sources that name other files -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["playlist", "concat"])
async def test_a_list_of_other_files_is_refused_unread(files: Files, kind: str) -> None:
    """An HLS playlist or ffconcat list is refused as not a video, and the media file it names
    is never opened."""
    source = getattr(files, kind)
    with watch_opens(files.secret) as opened:
        message = await invalid(source)
    assert message == NAMES_OTHER_FILES
    assert opened == []
    assert str(files.secret) not in message


async def test_a_picture(files: Files) -> None:
    """A still image is refused as a picture, not a video."""
    assert await invalid(files.picture) == "The file is a picture, not a video."


async def test_an_mpeg_ts_video(files: Files) -> None:
    """An MPEG-TS video (one file, no playlist) is accepted; later readers are forced to it."""
    with watch_opens(files.secret) as opened:
        info = await probe(files.transport, timeout_s=30)
    assert info.format_name == "mpegts" and info.demuxer == "mpegts"
    assert opened == []


# -- sound alone, for a transcript (no picture needed) -------------------------------------------


async def test_sound_alone_for_a_transcript(files: Files) -> None:
    """Probed for a transcript only, an audio-only file is accepted with no picture (0x0), and
    later readers are forced to its container."""
    info = await probe(files.audio_only, timeout_s=30, need_video=False)
    assert (info.width, info.height, info.rotation, info.video_codec) == (0, 0, 0, "")
    assert not info.has_video and info.display_size == (0, 0)
    assert (info.audio_codec, info.demuxer) == ("aac", "mov")
    assert info.duration == pytest.approx(1.0, abs=0.1)
    assert MediaInfo.from_dict(info.to_dict()) == info


async def test_a_video_for_a_transcript(files: Files) -> None:
    """Probed for a transcript only, a video is read as it is for subtitles."""
    assert await probe(files.good, timeout_s=30, need_video=False) == await probe(
        files.good, timeout_s=30
    )


async def test_a_video_without_sound_for_a_transcript(files: Files) -> None:
    """A silent video is refused for a transcript too: there is nothing to transcribe."""
    assert "no audio track" in await invalid(files.silent, need_video=False)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("text_txt", "The file could not be read as a video or audio file (it looks like text)."),
        ("playlist", names_other_files(VIDEOS_OR_AUDIO)),
        ("concat", names_other_files(VIDEOS_OR_AUDIO)),
        ("picture", "The file is a picture, not a video or audio file."),
    ],
)
async def test_what_a_transcript_refuses(files: Files, kind: str, expected: str) -> None:
    """Text, lists of other files and pictures are refused for a transcript too, in words that
    ask for a video or an audio file; the file a list names is never opened."""
    with watch_opens(files.secret) as opened:
        assert await invalid(getattr(files, kind), need_video=False) == expected
    assert opened == []


async def test_sound_alone_beyond_max_duration(files: Files) -> None:
    """An audio file longer than MAX_DURATION_S fails `too_long`, named an audio file."""
    with pytest.raises(TooLong) as err:
        await probe(files.audio_only, timeout_s=30, max_duration_s=0.5, need_video=False)
    assert err.value.message == "The audio file is 1 seconds long; the limit is 0 seconds."


# -- limits --------------------------------------------------------------------------------------


async def test_a_picture_beyond_max_pixels(files: Files) -> None:
    """A picture larger than MAX_PIXELS fails `too_large_frame`, naming the sizes."""
    with pytest.raises(PermanentError) as err:
        await probe(files.good, timeout_s=30, max_pixels=160 * 119)
    assert err.value.code == "too_large_frame"
    assert "160x120" in err.value.message and "19,040" in err.value.message
    info = await probe(files.good, timeout_s=30, max_pixels=160 * 120)
    assert (info.width, info.height) == (160, 120)


async def test_a_video_beyond_max_duration(files: Files) -> None:
    """A video whose header says it is longer than MAX_DURATION_S fails `too_long`."""
    with pytest.raises(TooLong) as err:
        await probe(files.good, timeout_s=30, max_duration_s=0.5)
    assert err.value.code == "too_long"
    assert err.value.message == "The video is 1 seconds long; the limit is 0 seconds."


# -- the pure decisions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("format_name", "ok"),
    [
        ("mov,mp4,m4a,3gp,3g2,mj2", True),
        ("matroska,webm", True),
        ("avi", True),
        ("mpegts", True),
        ("flv", True),
        ("ogg", True),
        ("asf", True),
        ("mpeg", True),
        ("hls", False),
        ("applehttp", False),
        ("dash", False),
        ("concat", False),
        ("imf", False),
        ("sdp", False),
        ("rtp", False),
        ("image2", False),
        ("png_pipe", False),
        ("lavfi", False),
        ("tty", False),
        ("webm_dash_manifest", False),
        ("mpegtsraw", False),
        ("mp3", False),
        ("", False),
    ],
)
def test_the_container_whitelist(format_name: str, ok: bool) -> None:
    """Only containers that hold their media themselves are read; none that name other files."""
    assert accepted(format_name) is ok


@pytest.mark.parametrize(
    ("format_name", "ok"),
    [
        ("mov,mp4,m4a,3gp,3g2,mj2", True),
        ("matroska,webm", True),
        ("ogg", True),
        ("wav", True),
        ("mp3", True),
        ("flac", True),
        ("aac", True),
        ("hls", False),
        ("concat", False),
        ("image2", False),
        ("png_pipe", False),
        ("tty", False),
        ("w64", False),
        ("", False),
    ],
)
def test_the_sound_whitelist(format_name: str, ok: bool) -> None:
    """Where sound alone will do, single-file audio formats are read too; still nothing that
    names other files."""
    assert accepted(format_name, AUDIO_DEMUXERS) is ok


@pytest.mark.parametrize(
    ("format_name", "says"),
    [
        ("hls", "playlist"),
        ("concat", "playlist"),
        ("dash", "playlist"),
        ("image2", "playlist"),
        ("tty", "looks like text"),
        ("png_pipe", "picture"),
        ("mp3", "vidstream reads MP4"),
        (None, "vidstream reads MP4"),
    ],
)
def test_refusals_say_why_in_plain_words(format_name: str | None, says: str) -> None:
    """Each refused format gets a sentence a person understands, naming no FFmpeg internals."""
    message = refusal(format_name)
    assert says in message and message.endswith(".")
    assert "demuxer" not in message
    assert format_name is None or format_name not in message


@pytest.mark.parametrize(
    ("width", "height", "code"),
    [
        (4096, 2304, None),
        (2304, 4096, None),
        (4096, 2305, "too_large_frame"),
        (16385, 2, "too_large_frame"),
        (2, 16384, None),
        (1, 100, "invalid_media"),
        (0, 0, "invalid_media"),
    ],
)
def test_frame_limits(width: int, height: int, code: str | None) -> None:
    """Pictures up to MAX_PIXELS with sides from 2 to 16384 are accepted; others fail for good."""
    if code is None:
        check_frame(width, height, 4096 * 2304)
        return
    with pytest.raises(PermanentError) as err:
        check_frame(width, height, 4096 * 2304)
    assert err.value.code == code


def test_duration_limit() -> None:
    """A duration at the limit passes; beyond it fails `too_long` in minutes people read."""
    check_duration(3600.0, 3600.0)
    with pytest.raises(TooLong) as err:
        check_duration(7300.0, 3600.0)
    assert err.value.message == "The video is 2.0 hours long; the limit is 60.0 minutes."
