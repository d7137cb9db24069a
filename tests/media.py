"""Test media made on the spot: espeak-ng speaks known sentences over an FFmpeg test pattern."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import struct
import subprocess
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from vidstream.media.captions import to_ass_styled
from vidstream.media.ffmpeg import resolve_binary
from vidstream.media.subtitles import FONT, Cue

FFMPEG = resolve_binary("auto")

SENTENCES = (
    "Today we talk about the weather in the city.",
    "Please open the window and let the fresh air in.",
    "Thank you for watching and have a nice day.",
)
GAP_S = 0.4
RATE = 22050


@dataclass(frozen=True)
class Spoken:
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Clip:
    path: Path
    duration: float
    spoken: tuple[Spoken, ...]

    @property
    def words(self) -> list[str]:
        return [w for s in self.spoken for w in words_of(s.text)]


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def speech_wav(
    directory: Path, sentences: tuple[str, ...] = SENTENCES, voices: tuple[str, ...] = ()
) -> tuple[Path, list[Spoken]]:
    """One WAV with each sentence after a short silence (the i-th in espeak-ng's voice
    `voices[i]`, when given); returns when each was spoken."""
    pcm: list[np.ndarray] = []
    spoken, t = [], 0.0
    silence = np.zeros(int(GAP_S * RATE), np.int16)
    for i, sentence in enumerate(sentences):
        part = directory / f"sentence{i}.wav"
        voice = ["-v", voices[i]] if voices else []
        subprocess.run(["espeak-ng", *voice, "-s", "150", "-w", str(part), sentence], check=True)
        with wave.open(str(part)) as w:
            assert w.getframerate() == RATE and w.getnchannels() == 1
            samples = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        pcm += [silence, samples]
        t += GAP_S
        spoken.append(Spoken(sentence, t, t + len(samples) / RATE))
        t += len(samples) / RATE
    pcm.append(silence)
    out = directory / "speech.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.concatenate(pcm).tobytes())
    return out, spoken


def make_clip(
    directory: Path, name: str = "clip.mp4", *, size: str = "640x360",
    video: tuple[str, ...] = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
    audio: tuple[str, ...] = ("-c:a", "aac"), sentences: tuple[str, ...] = SENTENCES,
    voices: tuple[str, ...] = (),
) -> Clip:  # fmt: skip
    """A video of the test pattern with the sentences spoken over it (in `voices`, if given)."""
    wav, spoken = speech_wav(directory, sentences, voices)
    duration = spoken[-1].end + GAP_S
    out = directory / name
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
         "-i", str(wav), "-t", f"{duration:.3f}", "-map", "0:v", "-map", "1:a",
         *video, *audio, str(out)],
        check=True,
    )  # fmt: skip
    return Clip(out, duration, tuple(spoken))


def duration_of(path: Path) -> float:
    with av.open(str(path)) as container:
        return float(container.duration or 0) / 1_000_000


def codecs_of(path: Path) -> dict[str, str]:
    with av.open(str(path)) as container:
        return {s.type: s.codec_context.codec.canonical_name for s in container.streams}


def gray_frame(path: Path, at_s: float) -> np.ndarray:
    """The frame shown at `at_s` as 8-bit grey levels (rows x columns)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        container.seek(int(max(at_s - 1, 0) * 1_000_000))
        frame = None
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= at_s:
                break
        assert frame is not None
        return frame.to_ndarray(format="gray").astype(np.int16)


def parse_cues(text: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of each SRT or WebVTT cue."""
    cues = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.strip().splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"(\d+):(\d\d):(\d\d)[,.](\d{3}) --> (\d+):(\d\d):(\d\d)[,.](\d{3})", line)
            if m:
                g = [int(x) for x in m.groups()]
                start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
                end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
                cues.append((start, end, " ".join(lines[i + 1 :])))
                break
    return cues


# -- hostile sources -----------------------------------------------------------------------------


def write_hls(path: Path, *segments: Path) -> Path:
    """An HLS playlist naming `segments` by absolute path, as one uploaded to read them."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:10", "#EXT-X-MEDIA-SEQUENCE:0"]
    for segment in segments:
        lines += ["#EXTINF:10.0,", str(segment.resolve())]
    path.write_text("\n".join([*lines, "#EXT-X-ENDLIST", ""]))
    return path


def write_ffconcat(path: Path, *files: Path) -> Path:
    """An ffconcat list naming `files` by absolute path."""
    lines = ["ffconcat version 1.0", *(f"file '{f.resolve()}'" for f in files)]
    path.write_text("\n".join([*lines, ""]))
    return path


def write_dash(path: Path, media: Path) -> Path:
    """A DASH manifest naming `media` by a file URL; FFmpeg knows it by its content alone."""
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" minBufferTime="PT1S"\n'
        '     profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" '
        'mediaPresentationDuration="PT2S">\n'
        '  <Period><AdaptationSet><Representation id="1" bandwidth="100000" '
        'mimeType="video/mp4">\n'
        f"    <BaseURL>file://{media.resolve()}</BaseURL>\n"
        "  </Representation></AdaptationSet></Period>\n</MPD>\n"
    )
    return path


def lie_about_duration(mkv: Path, dest: Path, seconds: float) -> Path:
    """A copy of a Matroska file whose header says it lasts `seconds`, whatever it plays."""
    data = bytearray(mkv.read_bytes())
    at = data.find(b"\x44\x89\x88")  # the Duration element: an 8-byte float, in milliseconds
    assert 0 < at < 4096, "no Duration element near the start"
    data[at + 3 : at + 11] = struct.pack(">d", seconds * 1000)
    dest.write_bytes(data)
    return dest


_IN_OPEN = 0x20


@contextlib.contextmanager
def watch_opens(*paths: Path) -> Iterator[list[str]]:
    """Names of `paths` that any process opened while the block ran (Linux inotify): the list is
    filled when the block ends."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1 failed")
    names: dict[int, str] = {}
    opened: list[str] = []
    try:
        for path in paths:
            wd = libc.inotify_add_watch(fd, os.fsencode(path), _IN_OPEN)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {path} failed")
            names[wd] = path.name
        yield opened
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):  # struct inotify_event: wd, mask, cookie, len, name
                wd, _mask, _cookie, size = struct.unpack_from("iIII", data, offset)
                opened.append(names[wd])
                offset += 16 + size
    finally:
        os.close(fd)


def varied_sentences(count: int, seed: int = 7) -> tuple[str, ...]:
    """`count` sentences unlike one another (Whisper drops text it finds too repetitive), each
    naming its own number."""
    import random

    pick = random.Random(seed).choice
    adjectives = [
        "red",
        "quiet",
        "happy",
        "tall",
        "small",
        "green",
        "bright",
        "old",
        "young",
        "brave",
        "calm",
        "warm",
    ]
    people = [
        "farmer",
        "teacher",
        "doctor",
        "painter",
        "sailor",
        "baker",
        "driver",
        "pilot",
        "singer",
        "writer",
    ]
    verbs = [
        "visited",
        "painted",
        "repaired",
        "carried",
        "opened",
        "cleaned",
        "borrowed",
        "found",
        "watched",
    ]
    places = [
        "garden",
        "bridge",
        "window",
        "kitchen",
        "boat",
        "market",
        "library",
        "station",
        "river",
        "tower",
    ]
    return tuple(
        f"The {pick(adjectives)} {pick(people)} {pick(verbs)} the {pick(places)} on day {i}."
        for i in range(1, count + 1)
    )


def scheduled_clip(
    directory: Path, name: str, duration: float, starts: list[float], *, size: str = "640x360",
    rate: int = 5, keyframe_every_s: float = 10.0,
) -> Clip:  # fmt: skip
    """A long test pattern with a varied sentence spoken at each of `starts` (seconds) and
    silence between; a keyframe exactly every `keyframe_every_s` seconds and nowhere else."""
    sentences = varied_sentences(len(starts))
    pcm = np.zeros(int(duration * RATE), np.int16)
    spoken = []
    for i, (sentence, start) in enumerate(zip(sentences, starts, strict=True)):
        part = directory / f"{name}-{i}.wav"
        subprocess.run(["espeak-ng", "-s", "150", "-w", str(part), sentence], check=True)
        with wave.open(str(part)) as w:
            samples = np.frombuffer(w.readframes(w.getnframes()), np.int16)
        at = int(start * RATE)
        samples = samples[: len(pcm) - at]
        pcm[at : at + len(samples)] = samples
        spoken.append(Spoken(sentence, start, start + len(samples) / RATE))
        part.unlink()
    wav = directory / f"{name}.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    out = directory / name
    keyframes = f"expr:gte(t,n_forced*{keyframe_every_s})"
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
         "-i", str(wav), "-t", f"{duration:.3f}", "-map", "0:v", "-map", "1:a",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-force_key_frames", keyframes, "-x264-params", "scenecut=0:keyint=100000",
         "-c:a", "aac", str(out)],
        check=True,
    )  # fmt: skip
    wav.unlink()
    return Clip(out, duration, tuple(spoken))


def video_frames(path: Path) -> int:
    """How many pictures the file's video track holds (its packets, none decoded)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


def to_ass(cues: list[Cue], width: int, height: int, font: str = FONT) -> str:
    """The ASS a subtitle job burns for `cues` in the default style (no karaoke)."""
    return to_ass_styled([(cue, ()) for cue in cues], width, height, font=font)


def spoken_over_grey(
    directory: Path, sentences: tuple[str, ...] = SENTENCES, name: str = "talk.mp4"
) -> tuple[Path, float]:
    """`sentences` spoken over dark grey at 720p (plain, for OCR); the file and its length."""
    wav, spoken = speech_wav(directory, sentences)
    path, length = directory / name, spoken[-1].end + 0.4
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=0x303030:s=1280x720:r=25",
         "-i", str(wav), "-t", f"{length:.3f}", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
        check=True,
    )  # fmt: skip
    return path, length
