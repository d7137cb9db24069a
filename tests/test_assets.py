"""Probing a composition's assets (videos, still pictures, sound) and sources of sound alone,
with real files made here by FFmpeg and espeak-ng."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import fetch, upload_job, watch
from tests.media import (
    FFMPEG,
    parse_cues,
    speech_wav,
    watch_opens,
    words_of,
    write_ffconcat,
    write_hls,
)
from vidstream.core import process
from vidstream.core.errors import InvalidMedia, PermanentError, TooLong
from vidstream.media import ffmpeg as commands
from vidstream.media.assets import NOT_A_PICTURE, AssetInfo, AssetKind, probe_asset, sniff_image
from vidstream.media.info import (
    ACCEPTED_DEMUXERS,
    ALL_DEMUXERS,
    AUDIO_DEMUXERS,
    IMAGE_DEMUXERS,
    names_other_files,
    refusal,
)
from vidstream.media.probe import probe
from vidstream.media.whisper_server import decode_range
from vidstream.runtime import Stack

PICTURE = ("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25")
SOUND = ("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100")
X264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")
IMAGES = {"png": "png_pipe", "jpg": "jpeg_pipe", "webp": "webp_pipe", "bmp": "bmp_pipe"}
SOUNDS = {
    "wav": ("wav", ("-c:a", "pcm_s16le")),
    "mp3": ("mp3", ("-c:a", "libmp3lame")),
    "flac": ("flac", ("-c:a", "flac")),
    "m4a": ("mov", ("-c:a", "aac")),
    "ogg": ("ogg", ("-c:a", "libvorbis")),
    "aac": ("aac", ("-c:a", "aac")),  # raw ADTS
}


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True)


@dataclass(frozen=True)
class Files:
    images: dict[str, Path]  # 160x120, by extension
    big: Path  # an 800x600 PNG
    sounds: dict[str, Path]
    video: Path  # 160x120 with sound
    silent: Path  # 160x120, no audio track
    text: Path
    secret: Path  # a media file elsewhere on the disk
    playlist: Path  # HLS naming it
    concat: Path  # ffconcat naming it


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    d = tmp_path_factory.mktemp("assets")
    images = {ext: d / f"picture.{ext}" for ext in IMAGES}
    for path in images.values():
        ffmpeg(*PICTURE, "-frames:v", "1", str(path))
    big = d / "big.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=800x600", "-frames:v", "1", str(big))
    sounds = {ext: d / f"sound.{ext}" for ext in SOUNDS}
    for ext, path in sounds.items():
        ffmpeg(*SOUND, "-t", "1", *SOUNDS[ext][1], str(path))
    video, silent = d / "video.mp4", d / "silent.mp4"
    ffmpeg(*PICTURE, *SOUND, "-t", "1", *X264, "-c:a", "aac", str(video))
    ffmpeg(*PICTURE, "-t", "1", *X264, str(silent))
    text = d / "notes.txt"
    text.write_text("These are my notes for the meeting, not a picture.\n" * 20)
    secret = d / "private" / "secret.wav"
    secret.parent.mkdir()
    ffmpeg(*SOUND, "-t", "1", str(secret))
    return Files(
        images, big, sounds, video, silent, text, secret,
        write_hls(d / "upload.m3u8", secret), write_ffconcat(d / "upload.ffconcat", secret),
    )  # fmt: skip


async def refused(
    path: Path, kind: AssetKind, max_pixels: int | None = None, max_duration_s: float | None = None
) -> PermanentError:
    """The error `path` is refused with as a `kind`, its message checked for internals."""
    with pytest.raises(PermanentError) as err:
        await probe_asset(path, kind, 30, max_pixels=max_pixels, max_duration_s=max_duration_s)
    message = err.value.message
    assert "Traceback" not in message and str(path.parent) not in message, message
    assert message[0].isupper() and message.endswith("."), message
    return err.value


async def asset(path: Path, kind: AssetKind) -> AssetInfo:
    return await probe_asset(path, kind, 30, max_pixels=None, max_duration_s=None)


# -- still pictures ------------------------------------------------------------------------------


@pytest.mark.parametrize(("ext", "demuxer"), IMAGES.items())
async def test_each_picture_format_is_read_as_one_picture(
    files: Files, ext: str, demuxer: str
) -> None:
    """A PNG, JPEG, WebP or BMP image is accepted with its size, read by the demuxer of its
    format that later readers are forced to, with no duration and no sound."""
    info = await asset(files.images[ext], AssetKind.IMAGE)
    assert (info.kind, info.demuxer) == (AssetKind.IMAGE, demuxer)
    assert (info.width, info.height, info.rotation, info.duration) == (160, 120, 0, 0.0)
    assert (info.has_video, info.has_audio) == (True, False)
    assert AssetInfo.from_dict(info.to_dict()) == info


async def test_the_bytes_decide_not_the_name(files: Files, tmp_path: Path) -> None:
    """A JPEG named .png is read as the JPEG it is."""
    named = tmp_path / "photo.png"
    named.write_bytes(files.images["jpg"].read_bytes())
    assert (await asset(named, AssetKind.IMAGE)).demuxer == "jpeg_pipe"


async def test_a_pattern_in_the_name_reads_that_one_file(files: Files, tmp_path: Path) -> None:
    """An image named like a sequence ("a%03d.jpg") is that one file: the files the pattern
    would match are never opened."""
    pattern = tmp_path / "a%03d.jpg"
    pattern.write_bytes(files.images["jpg"].read_bytes())
    others = [tmp_path / "a001.jpg", tmp_path / "a002.jpg"]
    for other in others:
        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1", str(other))
    with watch_opens(*others) as opened:
        info = await asset(pattern, AssetKind.IMAGE)
    assert (info.demuxer, info.width, info.height) == ("jpeg_pipe", 160, 120)
    assert opened == []


async def test_a_damaged_picture(files: Files, tmp_path: Path) -> None:
    """A PNG cut short is refused as damaged, in words about the image."""
    cut = tmp_path / "cut.png"
    cut.write_bytes(files.images["png"].read_bytes()[:200])
    err = await refused(cut, AssetKind.IMAGE)
    assert err.code == "invalid_media" and err.message.startswith("The image is damaged")


async def test_a_picture_beyond_max_pixels(files: Files) -> None:
    """An image larger than MAX_PIXELS fails `too_large_frame`, naming its size; one at the
    limit is accepted."""
    for ext in IMAGES:
        err = await refused(files.images[ext], AssetKind.IMAGE, max_pixels=160 * 119)
        assert err.code == "too_large_frame"
        assert err.message.startswith("The image is 160x120 pixels"), err.message
    # Far beyond: the decoder itself refuses the picture, and its size is still named.
    err = await refused(files.big, AssetKind.IMAGE, max_pixels=1000)
    assert err.code == "too_large_frame", err.message
    assert err.message.startswith("The image is 800x600 pixels; vidstream accepts at most 1,000")
    info = await probe_asset(
        files.images["png"], AssetKind.IMAGE, 30, max_pixels=160 * 120, max_duration_s=1.0
    )
    assert (info.width, info.height) == (160, 120)


@pytest.mark.parametrize("kind", [AssetKind.VIDEO, AssetKind.AUDIO])
async def test_a_picture_is_not_a_video_or_sound(files: Files, kind: AssetKind) -> None:
    """A still image given as a video or as sound is refused as a picture."""
    err = await refused(files.images["png"], kind)
    assert err.message == f"The file is a picture, not {kind.reading.a}."


# -- sound ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ext", "demuxer"), [(e, d) for e, (d, _codec) in SOUNDS.items()])
async def test_each_sound_format_is_read_with_its_duration(
    files: Files, ext: str, demuxer: str
) -> None:
    """WAV, MP3, FLAC, M4A, Ogg and AAC files are accepted as sound, with their duration."""
    info = await asset(files.sounds[ext], AssetKind.AUDIO)
    assert (info.kind, info.demuxer) == (AssetKind.AUDIO, demuxer)
    assert info.duration == pytest.approx(1.0, abs=0.1)
    assert (info.width, info.height, info.has_audio, info.has_video) == (0, 0, True, False)
    assert AssetInfo.from_dict(info.to_dict()) == info


async def test_a_video_gives_its_sound(files: Files) -> None:
    """A video given as sound is accepted for its audio track; its picture is not offered."""
    info = await asset(files.video, AssetKind.AUDIO)
    assert (info.demuxer, info.width, info.has_audio, info.has_video) == ("mov", 0, True, False)


async def test_sound_beyond_max_duration(files: Files) -> None:
    """An audio file longer than MAX_DURATION_S fails `too_long`, naming it an audio file."""
    err = await refused(files.sounds["mp3"], AssetKind.AUDIO, max_duration_s=0.5)
    assert isinstance(err, TooLong)
    assert err.message == "The audio file is 1 seconds long; the limit is 0 seconds."


# -- videos --------------------------------------------------------------------------------------


async def test_a_video_with_and_without_sound(files: Files) -> None:
    """A video is accepted with or without an audio track, which `has_audio` tells; without
    one it is refused as sound."""
    with_sound = await asset(files.video, AssetKind.VIDEO)
    assert (with_sound.demuxer, with_sound.width, with_sound.height) == ("mov", 160, 120)
    assert (with_sound.has_video, with_sound.has_audio) == (True, True)
    assert with_sound.duration == pytest.approx(1.0, abs=0.1)
    silent = await asset(files.silent, AssetKind.VIDEO)
    assert (silent.has_video, silent.has_audio) == (True, False)
    err = await refused(files.silent, AssetKind.AUDIO)
    assert err.code == "invalid_media" and "no audio track" in err.message


async def test_sound_is_not_a_video(files: Files) -> None:
    """An M4A (the MP4 container) given as a video is refused: it has no picture."""
    err = await refused(files.sounds["m4a"], AssetKind.VIDEO)
    assert "no video track" in err.message


async def test_a_video_beyond_the_limits(files: Files) -> None:
    """A video asset obeys MAX_PIXELS and MAX_DURATION_S as a source does."""
    err = await refused(files.video, AssetKind.VIDEO, max_pixels=160 * 119)
    assert err.code == "too_large_frame" and "160x120" in err.message
    err = await refused(files.video, AssetKind.VIDEO, max_duration_s=0.5)
    assert err.message == "The video is 1 seconds long; the limit is 0 seconds."


# -- what is never read --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(AssetKind))
@pytest.mark.parametrize("name", ["text", "playlist", "concat"])
async def test_text_and_lists_of_files_are_refused_unread(
    files: Files, kind: AssetKind, name: str
) -> None:
    """A text file, an HLS playlist or an ffconcat list is refused as any kind of asset, and
    the media file a list names is never opened."""
    with watch_opens(files.secret) as opened:
        err = await refused(getattr(files, name), kind)
    assert err.code == "invalid_media"
    assert opened == []
    if kind is AssetKind.IMAGE:
        assert err.message == NOT_A_PICTURE
    elif name == "text":
        assert (
            err.message == f"The file could not be read as {kind.reading.a} (it looks like text)."
        )
    else:
        assert err.message == names_other_files(kind.reading)


async def test_a_missing_asset(tmp_path: Path) -> None:
    """An asset that vanished is refused with a readable reason, not a crash."""
    for kind in AssetKind:
        err = await refused(tmp_path / "gone", kind)
        assert err.code == "invalid_media" and "could not be read" in err.message


@pytest.mark.parametrize(
    ("head", "demuxer"),
    [
        (b"\x89PNG\r\n\x1a\n\0\0\0\x0d", "png_pipe"),
        (b"\xff\xd8\xff\xe0\0\x10JFIF\0", "jpeg_pipe"),
        (b"RIFF\x24\0\0\0WEBP", "webp_pipe"),
        (b"BM\x36\0\0\0\0\0\0\0\x36\0", "bmp_pipe"),
        (b"RIFF\x24\0\0\0WAVE", None),  # a WAV file is RIFF too
        (b"GIF89a\0\0\0\0\0\0", None),
        (b"#EXTM3U\n#EXT", None),
        (b"\x89PNG", None),  # PNG's signature is eight bytes
        (b"", None),
    ],
)
def test_pictures_are_known_by_their_first_bytes(head: bytes, demuxer: str | None) -> None:
    """PNG, JPEG, WebP and BMP are told apart by their signatures; anything else is refused."""
    if demuxer is not None:
        assert sniff_image(head) == demuxer
        return
    with pytest.raises(InvalidMedia) as err:
        sniff_image(head)
    assert err.value.message == NOT_A_PICTURE


def test_the_whitelists_hold_single_files_only() -> None:
    """No whitelist holds a demuxer that reads other files (image2, HLS, concat...); sound
    takes the video containers too."""
    assert set(ACCEPTED_DEMUXERS) <= set(AUDIO_DEMUXERS)
    for demuxer in ALL_DEMUXERS:
        assert "playlist" not in refusal(demuxer), demuxer
    for reader in ("image2", "image2pipe", "hls", "concat", "dash", "lavfi"):
        assert reader not in ALL_DEMUXERS
        with pytest.raises(InvalidMedia):
            commands.source_input("/data/asset", reader)


@pytest.mark.parametrize("demuxer", ["jpeg_pipe", "png_pipe", "wav", "mp3", "flac", "aac"])
def test_an_asset_is_opened_with_its_demuxer_forced(demuxer: str) -> None:
    """FFmpeg opens a picture or a sound file as the format the probe found, from local files
    only: it never guesses a format of its own (image2 would expand a pattern)."""
    argv = commands.source_input("/data/asset", demuxer, max_pixels=1000)
    assert argv[:4] == ["-f", demuxer, "-protocol_whitelist", "file"]
    assert argv[-2:] == ["-i", "/data/asset"]


def test_a_stored_asset_outside_its_whitelist_is_refused() -> None:
    """An asset stored with a demuxer its kind does not take never reaches FFmpeg."""
    fields = {"duration": 0.0, "width": 2, "height": 2, "has_audio": False, "has_video": True}
    for kind, demuxer in [("image", "image2"), ("image", "mov"), ("video", "wav"),
                          ("audio", "png_pipe"), ("video", "hls")]:  # fmt: skip
        with pytest.raises(InvalidMedia):
            AssetInfo.from_dict({"kind": kind, "demuxer": demuxer, **fields})
    assert IMAGE_DEMUXERS == ("png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe")


# -- sound alone, through the transcribe stage ---------------------------------------------------


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A WAV of espeak-ng speaking, and its words."""
    wav, spoken = speech_wav(tmp_path_factory.mktemp("speech"))
    return wav, [w for s in spoken for w in words_of(s.text)]


async def test_spoken_sound_alone_is_decoded_for_whisper(speech: tuple[Path, list[str]]) -> None:
    """A WAV of speech probed for a transcript (no picture needed) decodes to 16 kHz mono PCM
    as long as it plays, both by `audio_pcm` and by the Whisper server's reader."""
    wav, _words = speech
    media = await probe(wav, 30, max_pixels=1000, max_duration_s=60, need_video=False)
    assert (media.demuxer, media.width, media.height, media.video_codec) == ("wav", 0, 0, "")
    assert not media.has_video and media.display_size == (0, 0)
    argv = commands.audio_pcm(FFMPEG, str(wav), media.demuxer, end=media.duration + 1)
    code, pcm, _err = await process.run(argv, 30)
    assert code == 0
    assert len(pcm) == pytest.approx(media.duration * 16000 * 2, rel=0.05)
    decoded = await asyncio.to_thread(
        decode_range, FFMPEG, str(wav), media.demuxer, 0.0, 60.0, media.duration
    )
    assert not decoded.more and decoded.seconds == pytest.approx(media.duration, rel=0.05)
    with pytest.raises(InvalidMedia) as err:  # no picture to put subtitles on
        await probe(wav, 30, need_video=True)
    assert "could not be read as a video" in err.value.message


@pytest.mark.slow
async def test_a_podcast_is_transcribed_but_not_subtitled(
    stack: Stack, http: aiohttp.ClientSession, speech: tuple[Path, list[str]]
) -> None:
    """A WAV uploaded as `kind: transcribe` comes back as a transcript of its words; as a
    subtitled video it fails `invalid_media`."""
    assert stack.gateway is not None
    wav, words = speech
    job = await upload_job(http, stack.gateway.url, wav, kind="transcribe")
    refused_job = await upload_job(http, stack.gateway.url, wav)
    events = await watch(job)
    assert events[-1]["event"] == "completed", events[-1]
    async with http.get(job["links"]["self"]) as r:
        final = await r.json()
    assert final["media"]["width"] == 0 and final["media"]["duration"] > 0
    cues = parse_cues((await fetch(http, final["outputs"]["srt"]["url"])).decode())
    heard = {w for _, _, text in cues for w in words_of(text)}
    assert sum(w in heard for w in words) / len(words) >= 0.75, cues
    failed = (await watch(refused_job))[-1]
    assert (failed["event"], failed["error"]["code"]) == ("failed", "invalid_media")
