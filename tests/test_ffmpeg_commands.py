"""FFmpeg command lines for rendering and for decoding audio, read as argument lists."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.media import FFMPEG, watch_opens, write_dash, write_hls
from vidstream.core.errors import ConfigError, InvalidMedia, PermanentError, TransientError
from vidstream.media.ffmpeg import (
    Bounds,
    Encoder,
    audio_pcm,
    burn_subtitles,
    frame_png,
    render_failure,
    resolve_binary,
    soft_subtitles,
    source_input,
)
from vidstream.media.info import MediaInfo, run_timeout

ENC = Encoder(preset="veryfast", crf=21, audio_bitrate="160k")
EVEN_SCALE = "scale=trunc(iw/2)*2:trunc(ih/2)*2"


def media(
    video: str = "h264", audio: str | None = "aac", width: int = 640, height: int = 360,
    rotation: int = 0, format_name: str = "mov,mp4,m4a,3gp,3g2,mj2",
) -> MediaInfo:  # fmt: skip
    return MediaInfo(10.0, format_name, width, height, rotation, video, audio, 2, 48000)


def value_after(argv: list[str], flag: str) -> str:
    """The argument that follows the (only) occurrence of `flag`."""
    assert argv.count(flag) == 1, (flag, argv)
    return argv[argv.index(flag) + 1]


def burn(info: MediaInfo, bounds: Bounds = Bounds()) -> list[str]:  # noqa: B008
    return burn_subtitles("ffmpeg", "/data/in.mp4", "subs.ass", "out.mp4", info, ENC, bounds)


def soft(
    info: MediaInfo,
    language: str | None = "en",
    bounds: Bounds = Bounds(),  # noqa: B008
) -> list[str]:
    return soft_subtitles(
        "ffmpeg", "/data/in.mp4", "subs.srt", "out.mp4", info, ENC, language, bounds
    )


def opened_as(argv: list[str], source: str) -> list[str]:
    """The options between the end of the previous input (or the global options) and the
    `-i` that opens `source`."""
    i = argv.index(source)
    assert argv[i - 1] == "-i", argv
    j = i - 1
    while j > 0 and argv[j - 1] not in ("-y", "-i") and not argv[j - 1].startswith("/"):
        j -= 1
    return argv[j : i - 1]


# -- burned-in subtitles -----------------------------------------------------------------------


def test_burn_re_encodes_with_x264_and_draws_the_ass_file() -> None:
    """Burned subtitles are drawn by the ass filter into an H.264 picture at the chosen quality."""
    argv = burn(media())
    assert argv[0] == "ffmpeg" and argv[-1] == "out.mp4"
    assert value_after(argv, "-i") == "/data/in.mp4"
    assert value_after(argv, "-c:v") == "libx264"
    assert value_after(argv, "-preset") == "veryfast"
    assert value_after(argv, "-crf") == "21"
    # libass draws with the declared font files the render links into fonts/
    assert value_after(argv, "-vf") == "ass=subs.ass:fontsdir=fonts,format=yuv420p"
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
    assert parts[0] == "ass=subs.ass:fontsdir=fonts" and parts[-1] == "format=yuv420p"
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
    """The first audio track is decoded to 16 kHz mono 16-bit PCM on stdout, up to the end."""
    argv = audio_pcm("ffmpeg", "/data/in.mp4", "mov", end=600.0)
    assert "-ss" not in argv
    assert value_after(argv, "-to") == "600.000"
    assert value_after(argv, "-map") == "0:a:0"
    assert value_after(argv, "-ac") == "1"
    assert value_after(argv, "-ar") == "16000"
    assert argv[-3:] == ["-f", "s16le", "pipe:1"]


def test_audio_pcm_range_seeks_on_the_input() -> None:
    """A range is cut on the input side, with times to the millisecond."""
    argv = audio_pcm("ffmpeg", "/data/in.mp4", "mov", start=61.25, end=122.5)
    i = argv.index("-f")
    assert argv[i - 4 : i] == ["-ss", "61.250", "-to", "122.500"]
    only_end = audio_pcm("ffmpeg", "/data/in.mp4", "mov", end=30.0)
    assert "-ss" not in only_end and value_after(only_end, "-to") == "30.000"


def test_audio_pcm_always_has_an_end() -> None:
    """No decode is open-ended: the end time is a required argument."""
    with pytest.raises(TypeError):
        audio_pcm("ffmpeg", "/data/in.mp4", "mov")  # type: ignore[call-arg]


def test_audio_pcm_range_is_in_source_time(tmp_path: Path) -> None:
    """Decoding seconds 1 to 2 of a 3 s file yields 1 s of sound, not 2 s."""
    tone = tmp_path / "tone.mka"
    subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
         "-c:a", "pcm_s16le", str(tone)],
        check=True,
    )  # fmt: skip
    argv = audio_pcm(FFMPEG, str(tone), "matroska", start=1.0, end=2.0)
    out = subprocess.run(argv, check=True, capture_output=True)
    assert len(out.stdout) / 2 / 16000 == pytest.approx(1.0, abs=0.01)


# -- how a source is opened --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("format_name", "demuxer"),
    [
        ("mov,mp4,m4a,3gp,3g2,mj2", "mov"),
        ("matroska,webm", "matroska"),
        ("mpegts", "mpegts"),
        ("avi", "avi"),
    ],
)
def test_every_command_forces_the_probed_demuxer(format_name: str, demuxer: str) -> None:
    """FFmpeg opens the source as the container the probe found, from local files only: it
    never guesses a format of its own (a playlist naming other files)."""
    info = media(format_name=format_name)
    expected = ["-f", demuxer, "-protocol_whitelist", "file"]
    for argv in (
        burn(info),
        soft(info),
        audio_pcm("ffmpeg", "/data/in.mp4", info.demuxer, end=10.0),
        frame_png("ffmpeg", "/data/in.mp4", 1.0, "f.png", demuxer=info.demuxer),
    ):
        assert opened_as(argv, "/data/in.mp4")[-4:] == expected, argv


def test_the_subtitle_input_is_opened_as_srt() -> None:
    """The SRT file of soft subtitles is read as SRT, from a local file only."""
    argv = soft(media())
    assert opened_as(argv, "subs.srt") == ["-f", "srt", "-protocol_whitelist", "file"]


@pytest.mark.parametrize("format_name", ["hls", "applehttp", "concat", "image2", "tty", "dash"])
def test_a_refused_demuxer_builds_no_command(format_name: str) -> None:
    """A job whose source was probed as a playlist (before the whitelist) is not rendered."""
    with pytest.raises(InvalidMedia):
        burn(media(format_name=format_name))
    with pytest.raises(InvalidMedia):
        source_input("/data/in.mp4", format_name)


def test_bounds_limit_the_decoded_picture_and_the_output_length() -> None:
    """Renders decode no picture beyond MAX_PIXELS and write no more than MAX_DURATION_S."""
    bounds = Bounds(max_pixels=9437184, max_s=14400.0)
    for argv in (burn(media(), bounds), soft(media(), bounds=bounds)):
        # The decoder counts coded pictures (rounded up), so it is given room over the limit.
        assert opened_as(argv, "/data/in.mp4")[-2:] == ["-max_pixels", str(2 * 9437184 + 65536)]
        assert value_after(argv, "-t") == "14400.000"
        assert argv.index("-t") > argv.index("-i")  # on the output, not the input
    assert "-max_pixels" not in burn(media()) and "-t" not in burn(media())


@pytest.mark.parametrize("kind", ["hls", "dash"])
def test_a_playlist_forced_to_the_probed_demuxer_is_not_followed(tmp_path: Path, kind: str) -> None:
    """A source swapped for a playlist after probing is read as the probed container and
    fails; the file the playlist names is never opened. (FFmpeg alone would follow a DASH
    manifest found by its content, whatever the file's name.)"""
    secret = tmp_path / "secret.mp4"
    subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
         "-c:a", "aac", str(secret)],
        check=True,
    )  # fmt: skip
    source = tmp_path / "source"  # stored without the client's name or extension
    _ = write_hls(source, secret) if kind == "hls" else write_dash(source, secret)
    with watch_opens(secret) as opened:
        out = subprocess.run(
            audio_pcm(FFMPEG, str(source), "mov", end=5.0), capture_output=True, check=False
        )
    assert out.returncode != 0 and out.stdout == b""
    assert opened == []


# -- what a failed render means ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("stderr", "code", "permanent"),
    [
        ("[libx264 @ 0x55] height not divisible by 2 (2x1)\nError while opening encoder",
         "invalid_media", True),
        ("[libx264 @ 0x55] invalid width x height (20000x16)", "invalid_media", True),
        ("Picture size 160x120 exceeds specified max pixel count 1000", "too_large_frame", True),
        ("/data/tmp/x/source.mp4: No space left on device", "ffmpeg_failed", False),
        ("", "ffmpeg_failed", False),
    ],
)  # fmt: skip
def test_render_failures(stderr: str, code: str, permanent: bool) -> None:
    """An encoder refusing the picture's size fails the job at once (it would fail every try);
    anything else is retried. Neither message shows FFmpeg's words, paths or addresses."""
    error = render_failure(1, stderr)
    assert error.code == code
    assert isinstance(error, PermanentError) is permanent
    assert isinstance(error, TransientError) is not permanent
    assert "/data" not in error.message and "0x" not in error.message
    if not permanent:
        assert error.message == "FFmpeg could not render the video (exit status 1)."


@pytest.mark.parametrize(
    ("duration", "factor", "timeout"),
    [(0.0, 4.0, 60.0), (10.0, 4.0, 100.0), (3600.0, 4.0, 14460.0), (10.0, 0.5, 65.0)],
)
def test_run_timeout_follows_the_duration(duration: float, factor: float, timeout: float) -> None:
    """A run may take 60 s plus MEDIA_TIMEOUT_FACTOR times the media's duration."""
    assert run_timeout(duration, factor) == timeout


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
