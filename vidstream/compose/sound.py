"""The compose graph's sound: each sounding clip trimmed, sped, faded and placed in time, ducked
under the track it names, then all mixed. Pure.

Every clip's stream is padded to the whole video's length in samples, so the mix, the ducking and
the output are exactly as long as the picture, whatever the sources' own lengths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from vidstream.compose.filters import Graph, num
from vidstream.compose.timeline import AudioClip, Timeline, VideoClip, frames

SAMPLE_RATE = 48_000
# The sidechain compressor that ducks: it starts to act once the other track is louder than
# about -34 dBFS (speech is far above), and lets go over 0.4 s between phrases.
DUCK = "threshold=0.02:attack=20:release=400:makeup=1"


@dataclass(frozen=True, slots=True)
class Voice:
    """A clip with sound, where it is: its track, and the input label of its asset's audio."""

    track: int
    clip: AudioClip | VideoClip
    label: str
    seek: float  # seconds its input was seeked to (`-ss`), subtracted from the trim


def samples(frame_count: int, rate: Fraction) -> int:
    return round(Fraction(frame_count) / rate * SAMPLE_RATE)


def tempo(speed: float) -> list[str]:
    """`atempo` takes 0.5 to 2 per filter; a chain covers 0.25 to 4."""
    steps, left = [], speed
    while left > 2.0:
        steps.append("atempo=2")
        left /= 2.0
    while left < 0.5:
        steps.append("atempo=0.5")
        left /= 0.5
    return [*steps, f"atempo={num(left)}"] if abs(left - 1.0) > 1e-9 else steps


def _voice(graph: Graph, voice: Voice, rate: Fraction, total: int) -> str:
    clip = voice.clip
    speed = clip.speed if isinstance(clip, VideoClip) else 1.0
    length = samples(frames(clip.duration, rate), rate)
    begin = max(clip.trim.start - voice.seek, 0.0)
    filters = [
        f"atrim=start={num(begin)}:duration={num(clip.duration * speed)}",
        "asetpts=PTS-STARTPTS",
        *tempo(speed),
        f"aformat=sample_fmts=fltp:sample_rates={SAMPLE_RATE}:channel_layouts=stereo",
        f"apad=whole_len={length}",
        f"atrim=end_sample={length}",
    ]
    if clip.volume != 1.0:
        filters.append(f"volume={num(clip.volume)}")
    fade_in, fade_out = _fades(clip)
    seconds = length / SAMPLE_RATE
    if fade_in:
        filters.append(f"afade=t=in:st=0:d={num(fade_in)}")
    if fade_out:
        filters.append(f"afade=t=out:st={num(max(seconds - fade_out, 0))}:d={num(fade_out)}")
    delay = samples(frames(clip.start, rate), rate)
    if delay:
        filters.append(f"adelay=delays={delay}S:all=1")
    filters += [f"apad=whole_len={total}", f"atrim=end_sample={total}"]
    return graph.chain([voice.label], filters, "a")


def _fades(clip: AudioClip | VideoClip) -> tuple[float, float]:
    if isinstance(clip, AudioClip):
        return clip.fade_in, clip.fade_out
    # A video's sound fades with its picture.
    ins = (
        clip.transition_in.duration
        if clip.transition_in and clip.transition_in.type == "fade"
        else 0
    )
    outs = (
        clip.transition_out.duration
        if clip.transition_out and clip.transition_out.type == "fade"
        else 0
    )
    return ins, outs


def mix(graph: Graph, timeline: Timeline, voices: Sequence[Voice], total_frames: int) -> str:
    """The whole sound as one labelled stream of `total_frames` frames' worth of samples."""
    rate = timeline.output.rate
    total = samples(total_frames, rate)
    if not voices:
        return graph.chain(
            [], [f"anullsrc=r={SAMPLE_RATE}:cl=stereo", f"atrim=end_sample={total}"], "a"
        )
    streams = [_voice(graph, v, rate, total) for v in voices]
    names = {track.name: t for t, track in enumerate(timeline.tracks) if track.name}
    ducking = {
        i: names[v.clip.duck.under]
        for i, v in enumerate(voices)
        if isinstance(v.clip, AudioClip) and v.clip.duck is not None
    }
    if ducking:
        streams = _duck(graph, voices, streams, ducking)
    if len(streams) == 1:
        mixed = streams[0]
    else:
        mixed = graph.chain(
            streams, [f"amix=inputs={len(streams)}:normalize=0:duration=longest"], "a"
        )
    return graph.chain([mixed], [f"aformat=sample_rates={SAMPLE_RATE}:channel_layouts=stereo"], "a")


def _duck(
    graph: Graph, voices: Sequence[Voice], streams: list[str], ducking: dict[int, int]
) -> list[str]:
    """Each ducking clip through a sidechain compressor keyed by the (undocked) sound of the
    track it names."""
    keyed: dict[int, list[str]] = {}  # track -> copies of its clips' streams, for the key
    wanted = set(ducking.values())
    streams = list(streams)
    for i, voice in enumerate(voices):
        if voice.track in wanted:
            streams[i], copy = graph.split(streams[i], 2, audio=True)
            keyed.setdefault(voice.track, []).append(copy)
    uses = {track: list(ducking.values()).count(track) for track in wanted}
    keys: dict[int, list[str]] = {}
    for track, copies in keyed.items():
        key = (
            copies[0]
            if len(copies) == 1
            else graph.chain(
                copies, [f"amix=inputs={len(copies)}:normalize=0:duration=longest"], "a"
            )
        )
        keys[track] = graph.split(key, uses[track], audio=True)
    for i, track in ducking.items():
        clip = voices[i].clip
        assert isinstance(clip, AudioClip)
        assert clip.duck is not None
        streams[i] = graph.chain(
            [streams[i], keys[track].pop()],
            [f"sidechaincompress={DUCK}:ratio={num(clip.duck.ratio)}"], "a",
        )  # fmt: skip
    return streams
