"""FFmpeg command lines, built as pure functions of the probed input and the settings.

Kept free of I/O so each render kind (burned subtitles today; soft subtitles; later composed
timelines) is one function whose output a unit test can read.

Every source is opened by `source_input`: with the demuxer the probe found forced (`-f`), so FFmpeg
never detects a format of its own (a playlist that names other files on the disk), and with the
`file` protocol only.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from vidstream.core.errors import (
    ConfigError,
    InvalidMedia,
    JobError,
    PermanentError,
    TransientError,
)
from vidstream.media import fonts
from vidstream.media.info import ALL_DEMUXERS, MediaInfo, decoder_max_pixels, refusal

# Codecs an MP4 carries and common players (browsers included) play, so they can be copied.
MP4_VIDEO = frozenset({"h264", "hevc", "av1", "mpeg4", "vp9"})
MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac"})

_ISO639_2 = {
    "en": "eng",
    "es": "spa",
    "fr": "fra",
    "de": "deu",
    "it": "ita",
    "pt": "por",
    "nl": "nld",
    "ru": "rus",
    "zh": "zho",
    "ja": "jpn",
    "ko": "kor",
    "ar": "ara",
    "hi": "hin",
    "pl": "pol",
    "tr": "tur",
    "sv": "swe",
    "uk": "ukr",
    "cs": "ces",
    "el": "ell",
    "he": "heb",
}


def resolve_binary(choice: str) -> str:
    """The FFmpeg executable: the pinned imageio-ffmpeg build for "auto", else a path or name.

    The pinned build is the same FFmpeg (9.x, with libx264 and libass) on every host, whatever
    the distribution ships; bench/ffmpeg_builds.py measures it against the system one.
    """
    if choice == "auto":
        try:
            import imageio_ffmpeg

            return str(imageio_ffmpeg.get_ffmpeg_exe())
        except (ImportError, RuntimeError):
            choice = "ffmpeg"
    found = shutil.which(choice)
    if not found:
        raise ConfigError(f"FFMPEG_BINARY={choice!r} was not found; install ffmpeg or set a path")
    return found


def _base(ffmpeg: str) -> list[str]:
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]


def source_input(source: str, demuxer: str, max_pixels: int | None = None) -> list[str]:
    """The options and `-i` that open a source or an asset (a video, a sound, a still picture):
    its probed demuxer forced, local files only, and (with `max_pixels`) no picture far larger
    decoded, whatever the header said."""
    if demuxer not in ALL_DEMUXERS:
        raise InvalidMedia(refusal(demuxer))
    argv = ["-f", demuxer, "-protocol_whitelist", "file"]
    if max_pixels is not None:
        argv += ["-max_pixels", str(decoder_max_pixels(max_pixels))]
    return [*argv, "-i", source]


def audio_pcm(
    ffmpeg: str, source: str, demuxer: str, *, start: float = 0.0, end: float
) -> list[str]:
    """Decode the first audio track (of a video, or of a file of sound alone) from `start` to
    `end` seconds to 16 kHz mono s16le on stdout. The end is always given: a header that lies
    about the length cannot make FFmpeg decode more."""
    argv = _base(ffmpeg)
    if start > 0:
        argv += ["-ss", f"{start:.3f}"]
    argv += ["-to", f"{end:.3f}", *source_input(source, demuxer)]
    argv += ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(16000)]
    return [*argv, "-f", "s16le", "pipe:1"]


@dataclass(frozen=True, slots=True)
class Encoder:
    preset: str = "veryfast"
    crf: int = 21
    audio_bitrate: str = "160k"


@dataclass(frozen=True, slots=True)
class Bounds:
    """What a render may decode and write, whatever the source's header says."""

    max_pixels: int | None = None  # per picture decoded
    max_s: float | None = None  # of output


def _bounded(bounds: Bounds) -> list[str]:
    return [] if bounds.max_s is None else ["-t", f"{bounds.max_s:.3f}"]


def _audio_args(media: MediaInfo, enc: Encoder) -> list[str]:
    if media.audio_codec in MP4_AUDIO:
        return ["-c:a", "copy"]
    return ["-c:a", "aac", "-b:a", enc.audio_bitrate]


def _video_filter(media: MediaInfo, subtitles: str | None) -> str:
    filters = []
    if subtitles:
        # FFmpeg applies the rotation before the filter graph, so the subtitles are laid out on
        # the picture as displayed. libass draws with the declared font files, which the render
        # links into `fonts.DIR` (`fonts.link`), not with whatever fontconfig prefers.
        filters.append(f"ass={subtitles}:fontsdir={fonts.DIR}")
    width, height = media.display_size
    if width % 2 or height % 2:  # 4:2:0 H.264 needs even dimensions
        filters.append("scale=trunc(iw/2)*2:trunc(ih/2)*2")
    filters.append("format=yuv420p")
    return ",".join(filters)


def burn_subtitles(
    ffmpeg: str,
    source: str,
    ass_file: str,
    output: str,
    media: MediaInfo,
    enc: Encoder,
    bounds: Bounds = Bounds(),
) -> list[str]:
    """Re-encode the video with the ASS subtitles drawn in; reports on stdout (`-progress`).

    `ass_file` should be a bare file name in the working directory: filter arguments have their
    own escaping rules, which a plain name never needs. Its fonts are read from `fonts.DIR`
    there (`fonts.link`).
    """
    # fmt: off
    return [
        *_base(ffmpeg),
        *source_input(source, media.demuxer, bounds.max_pixels),
        "-map", "0:v:0", "-map", "0:a:0?", "-sn", "-dn",
        "-vf", _video_filter(media, ass_file),
        "-c:v", "libx264", "-preset", enc.preset, "-crf", str(enc.crf),
        *_audio_args(media, enc),
        *_bounded(bounds),
        "-movflags", "+faststart",
        "-progress", "pipe:1", "-nostats",
        output,
    ]
    # fmt: on


def burn_segment(
    ffmpeg: str, source: str, ass_file: str, output: str, media: MediaInfo, enc: Encoder,
    *, start: float, frames: int, bounds: Bounds = Bounds(),
) -> list[str]:  # fmt: skip
    """One segment of a fanned-out burn (`burn_subtitles`' picture, no sound): the `frames`
    frames from the keyframe at `start` seconds, each kept with its own timestamp, so the
    segments joined (`join_segments`) hold every frame of the source once. The input is sought
    a millisecond early: the keyframe itself is the first frame kept, never its neighbour."""
    # fmt: off
    return [
        *_base(ffmpeg),
        "-ss", f"{max(start - 0.001, 0.0):.6f}",
        *source_input(source, media.demuxer, bounds.max_pixels),
        "-map", "0:v:0", "-an", "-sn", "-dn",
        "-vf", _video_filter(media, ass_file), "-fps_mode", "passthrough",
        "-frames:v", str(frames),
        "-c:v", "libx264", "-preset", enc.preset, "-crf", str(enc.crf),
        *_bounded(bounds),
        "-progress", "pipe:1", "-nostats",
        output,
    ]
    # fmt: on


def join_segments(
    ffmpeg: str, listing: str, source: str, output: str, media: MediaInfo, enc: Encoder,
    bounds: Bounds = Bounds(),
) -> list[str]:  # fmt: skip
    """The segments `listing` names (a concat demuxer file of bare names in the working
    directory), joined without re-encoding, with the source's sound taken once, whole."""
    # fmt: off
    return [
        *_base(ffmpeg),
        "-f", "concat", "-safe", "1", "-protocol_whitelist", "file", "-i", listing,
        *source_input(source, media.demuxer),
        "-map", "0:v:0", "-map", "1:a:0?", "-sn", "-dn",
        "-c:v", "copy", *_audio_args(media, enc),
        *_bounded(bounds),
        "-movflags", "+faststart",
        "-progress", "pipe:1", "-nostats",
        output,
    ]
    # fmt: on


def soft_subtitles(
    ffmpeg: str,
    source: str,
    srt_file: str | None,
    output: str,
    media: MediaInfo,
    enc: Encoder,
    language: str | None,
    bounds: Bounds = Bounds(),
) -> list[str]:
    """Mux the subtitles as a selectable track; copies the video when MP4 can carry it.

    With no `srt_file` (nothing was said) the MP4 has no subtitle track: FFmpeg refuses an
    empty SRT file.
    """
    if media.video_codec in MP4_VIDEO:
        video = ["-c:v", "copy"]
        if media.video_codec == "hevc":
            video += ["-tag:v", "hvc1"]  # the tag Apple players require for HEVC in MP4
    else:
        video = ["-vf", _video_filter(media, None), "-c:v", "libx264"]
        video += ["-preset", enc.preset, "-crf", str(enc.crf)]
    inputs, subs = source_input(source, media.demuxer, bounds.max_pixels), []
    if srt_file is not None:
        lang = _ISO639_2.get(language or "", "und")
        inputs += ["-f", "srt", "-protocol_whitelist", "file", "-i", srt_file]
        subs = ["-map", "1:0", "-c:s", "mov_text", "-metadata:s:s:0", f"language={lang}"]
        subs += ["-disposition:s:0", "default"]
    # fmt: off
    return [
        *_base(ffmpeg),
        *inputs,
        "-map", "0:v:0", "-map", "0:a:0?",
        *video,
        *_audio_args(media, enc),
        *subs,
        *_bounded(bounds),
        "-movflags", "+faststart",
        "-progress", "pipe:1", "-nostats",
        output,
    ]
    # fmt: on


def frame_png(
    ffmpeg: str, source: str | Path, at_s: float, output: str | Path, *, demuxer: str
) -> list[str]:
    """Grab one frame as PNG (used by tests and tools)."""
    argv = [*_base(ffmpeg), "-ss", f"{at_s:.3f}", *source_input(str(source), demuxer)]
    return [*argv, "-frames:v", "1", str(output)]


# What FFmpeg says when a picture's size is refused: by the decoder (beyond -max_pixels), or by
# the encoder (libx264: odd sizes in 4:2:0, sides over 16384). Each would fail every try alike.
_TOO_MANY_PIXELS = "exceeds specified max pixel count"
_SIZE_REFUSED = (
    "Error while opening encoder",
    "invalid width x height",
    "not divisible by 2",
    "Picture size",
)


def render_failure(exit_status: int, stderr: str) -> JobError:
    """What a failed render means for the job, from FFmpeg's exit status and last words. The
    message is for people: FFmpeg's own words (paths, addresses) go to the logs only."""
    if _TOO_MANY_PIXELS in stderr:
        return PermanentError(
            "The video's picture is larger than vidstream decodes.", code="too_large_frame"
        )
    if any(sign in stderr for sign in _SIZE_REFUSED):
        return InvalidMedia("The video's picture size cannot be encoded as H.264.")
    return TransientError(
        f"FFmpeg could not render the video (exit status {exit_status}).", code="ffmpeg_failed"
    )
