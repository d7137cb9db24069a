"""FFmpeg command lines for rendering and for decoding audio, read as argument lists."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.media import FFMPEG
from vidstream.errors import ConfigError
from vidstream.media.ffmpeg import (
    Encoder,
    audio_pcm,
    burn_subtitles,
    resolve_binary,
    soft_subtitles,
)
from vidstream.media.info import MediaInfo

ENC = Encoder(preset="veryfast", crf=21, audio_bitrate="160k")
EVEN_SCALE = "scale=trunc(iw/2)*2:trunc(ih/2)*2"


def media(
    video: str = "h264", audio: str | None = "aac", width: int = 640, height: int = 360,
    rotation: int = 0,
) -> MediaInfo:  # fmt: skip
    return MediaInfo(10.0, "mov,mp4", width, height, rotation, video, audio, 2, 48000)


def value_after(argv: list[str], flag: str) -> str:
    """The argument that follows the (only) occurrence of `flag`."""
    assert argv.count(flag) == 1, (flag, argv)
    return argv[argv.index(flag) + 1]


def burn(info: MediaInfo) -> list[str]:
    return burn_subtitles("ffmpeg", "/data/in.mp4", "subs.ass", "out.mp4", info, ENC)


def soft(info: MediaInfo, language: str | None = "en") -> list[str]:
    return soft_subtitles("ffmpeg", "/data/in.mp4", "subs.srt", "out.mp4", info, ENC, language)


# -- burned-in subtitles -----------------------------------------------------------------------


def test_burn_re_encodes_with_x264_and_draws_the_ass_file() -> None:
    """Burned subtitles are drawn by the ass filter into an H.264 picture at the chosen quality."""
    argv = burn(media())
    assert argv[0] == "ffmpeg" and argv[-1] == "out.mp4"
    assert value_after(argv, "-i") == "/data/in.mp4"
    assert value_after(argv, "-c:v") == "libx264"
    assert value_after(argv, "-preset") == "veryfast"
    assert value_after(argv, "-crf") == "21"
    assert value_after(argv, "-vf") == "ass=subs.ass,format=yuv420p"
    assert value_after(argv, "-progress") == "pipe:1"
    assert value_after(argv, "-movflags") == "+faststart"
    assert "-nostdin" in argv and "-y" in argv
    assert value_after(argv, "-loglevel") == "error"


def test_burn_maps_one_video_and_an_optional_audio_track() -> None:
    """Only the first picture and sound are kept; a source's own subtitle/data tracks are not."""
    argv = burn(media())
    maps = [argv[i + 1] for i, a in enumerate(argv) if a == "-map"]
    assert maps == ["0:v:0", "0:a:0?"]
    assert "-sn" in argv and "-dn" in argv


@pytest.mark.parametrize("codec", ["aac", "mp3"])
def test_burn_copies_mp4_compatible_audio(codec: str) -> None:
    """Sound MP4 can carry is copied untouched, not re-encoded."""
    argv = burn(media(audio=codec))
    assert value_after(argv, "-c:a") == "copy"
    assert "-b:a" not in argv


@pytest.mark.parametrize("codec", ["opus", "pcm_s16le", "vorbis", "flac", None])
def test_burn_re_encodes_other_audio_to_aac(codec: str | None) -> None:
    """Sound an MP4 player cannot play (Opus, PCM, Vorbis ...) is converted to AAC."""
    argv = burn(media(audio=codec))
    assert value_after(argv, "-c:a") == "aac"
    assert value_after(argv, "-b:a") == "160k"


@pytest.mark.parametrize(
    ("width", "height", "rotation", "scaled"),
    [
        (640, 360, 0, False),
        (641, 360, 0, True),
        (640, 361, 0, True),
        (321, 241, 90, True),
        (1080, 1920, 90, False),
    ],
)
def test_burn_scales_only_odd_sizes(width: int, height: int, rotation: int, scaled: bool) -> None:
    """Odd-sized videos are trimmed to even sizes for H.264; even ones keep their exact size."""
    vf = value_after(burn(media(width=width, height=height, rotation=rotation)), "-vf")
    assert (EVEN_SCALE in vf) is scaled
    parts = vf.split(",")
    assert parts[0] == "ass=subs.ass" and parts[-1] == "format=yuv420p"
    if scaled:
        assert parts.index(EVEN_SCALE) == 1  # after drawing, before the pixel format


# -- soft subtitles ----------------------------------------------------------------------------


def test_soft_copies_h264_and_adds_a_mov_text_track() -> None:
    """A selectable subtitle track is added while the H.264 picture is copied bit for bit."""
    argv = soft(media())
    assert value_after(argv, "-c:v") == "copy"
    assert "-vf" not in argv and "libx264" not in argv and "-tag:v" not in argv
    assert value_after(argv, "-c:s") == "mov_text"
    inputs = [argv[i + 1] for i, a in enumerate(argv) if a == "-i"]
    assert inputs == ["/data/in.mp4", "subs.srt"]
    maps = [argv[i + 1] for i, a in enumerate(argv) if a == "-map"]
    assert maps == ["0:v:0", "0:a:0?", "1:0"]
    assert value_after(argv, "-disposition:s:0") == "default"
    assert value_after(argv, "-progress") == "pipe:1"
    assert value_after(argv, "-movflags") == "+faststart"
    assert value_after(argv, "-c:a") == "copy"


def test_soft_tags_hevc_for_apple_players() -> None:
    """Copied HEVC is tagged hvc1 so that Safari and QuickTime play it."""
    argv = soft(media(video="hevc"))
    assert value_after(argv, "-c:v") == "copy"
    assert value_after(argv, "-tag:v") == "hvc1"


@pytest.mark.parametrize("codec", ["vp8", "theora", "mpeg2video"])
def test_soft_re_encodes_video_mp4_cannot_carry(codec: str) -> None:
    """A picture MP4 cannot hold (VP8, Theora ...) is re-encoded to H.264."""
    argv = soft(media(video=codec, width=641, audio="vorbis"))
    assert value_after(argv, "-c:v") == "libx264"
    assert value_after(argv, "-vf") == f"{EVEN_SCALE},format=yuv420p"
    assert "ass=" not in " ".join(argv)
    assert value_after(argv, "-c:a") == "aac"


@pytest.mark.parametrize(
    ("language", "tag"),
    [("en", "eng"), ("fr", "fra"), ("de", "deu"), ("zh", "zho"), ("xx", "und"), (None, "und")],
)
def test_soft_tags_the_subtitle_language(language: str | None, tag: str) -> None:
    """Players list the subtitle track under its language, or as undetermined."""
    assert value_after(soft(media(), language), "-metadata:s:s:0") == f"language={tag}"


# -- audio for transcription -------------------------------------------------------------------


def test_audio_pcm_whole_file() -> None:
    """The whole first audio track is decoded to 16 kHz mono 16-bit PCM on stdout."""
    argv = audio_pcm("ffmpeg", "/data/in.mp4")
    assert "-ss" not in argv and "-to" not in argv
    assert value_after(argv, "-map") == "0:a:0"
    assert value_after(argv, "-ac") == "1"
    assert value_after(argv, "-ar") == "16000"
    assert value_after(argv, "-f") == "s16le"
    assert argv[-1] == "pipe:1"


def test_audio_pcm_range_seeks_on_the_input() -> None:
    """A range is cut on the input side, with times to the millisecond."""
    argv = audio_pcm("ffmpeg", "/data/in.mp4", start=61.25, end=122.5)
    i = argv.index("-i")
    assert argv[i - 4 : i] == ["-ss", "61.250", "-to", "122.500"]
    only_end = audio_pcm("ffmpeg", "/data/in.mp4", end=30.0)
    assert "-ss" not in only_end and value_after(only_end, "-to") == "30.000"
    only_start = audio_pcm("ffmpeg", "/data/in.mp4", start=5.0)
    assert value_after(only_start, "-ss") == "5.000" and "-to" not in only_start


def test_audio_pcm_range_is_in_source_time(tmp_path: Path) -> None:
    """Decoding seconds 1 to 2 of a 3 s file yields 1 s of sound, not 2 s."""
    wav = tmp_path / "tone.wav"
    subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=3", str(wav)],
        check=True,
    )
    out = subprocess.run(audio_pcm(FFMPEG, str(wav), 1.0, 2.0), check=True, capture_output=True)
    assert len(out.stdout) / 2 / 16000 == pytest.approx(1.0, abs=0.01)


# -- the binary --------------------------------------------------------------------------------


def test_resolve_auto_gives_an_executable() -> None:
    """The default setting finds an FFmpeg that can run."""
    path = resolve_binary("auto")
    assert os.path.isfile(path) and os.access(path, os.X_OK)


def test_resolve_a_missing_binary_names_the_setting(tmp_path: Path) -> None:
    """A wrong FFMPEG_BINARY stops start-up with a message naming the variable."""
    with pytest.raises(ConfigError, match="FFMPEG_BINARY") as err:
        resolve_binary(str(tmp_path / "no-such-ffmpeg"))
    assert "no-such-ffmpeg" in str(err.value)
    with pytest.raises(ConfigError, match="FFMPEG_BINARY"):
        resolve_binary("vidstream-no-such-ffmpeg-binary")


def test_soft_subtitles_without_speech_has_no_subtitle_input(tmp_path: Path) -> None:
    """A video in which nothing was said still renders: no subtitle track, no empty SRT."""
    src = tmp_path / "silent.mp4"
    subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=10",
         "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "1", "-c:v", "libx264",
         "-c:a", "aac", str(src)],
        check=True,
    )  # fmt: skip
    media = MediaInfo(1.0, "mov", 160, 90, 0, "h264", "aac", 1, 16000)
    argv = soft_subtitles(FFMPEG, str(src), None, str(tmp_path / "out.mp4"), media, Encoder(), "en")
    assert "mov_text" not in argv
    assert argv.count("-i") == 1
    subprocess.run(argv, check=True, capture_output=True)
    assert (tmp_path / "out.mp4").stat().st_size > 0
