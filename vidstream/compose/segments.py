"""Rendering a long timeline in parts at once: where to cut, and the commands that put the parts
back together. Pure.

The picture is cut into segments of whole frames, preferably where clips begin or end (a cut
inside a clip works too: each segment picks a clip up at the frame it reached), each encoded by
its own FFmpeg; the sound is mixed once, whole, so no audio frame straddles a cut. The segments
are then joined by the concat demuxer without re-encoding: the same frames as one pass, exactly.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

from vidstream.compose.filters import num
from vidstream.compose.timeline import Timeline, frames

PREVIEW_HEIGHT = 240  # pixels: enough to judge a composition, cheap to make


def plan(timeline: Timeline, total: int, segment_s: float, parallel: int) -> list[tuple[int, int]]:
    """Frame ranges [first, last) covering `total` frames: one, unless the video is at least two
    segments long and more than one FFmpeg may run at once."""
    rate = timeline.output.rate
    size = frames(segment_s, rate) if segment_s > 0 else 0
    if parallel < 2 or size < 1 or total < 2 * size:
        return [(0, total)]
    count = math.ceil(total / size)
    bounds = sorted({
        edge for _, _, clip in timeline.clips()
        for edge in (frames(clip.start, rate), frames(clip.end, rate)) if 0 < edge < total
    })  # fmt: skip
    cuts: list[int] = []
    for i in range(1, count):
        ideal = round(i * total / count)
        near = [b for b in bounds if abs(b - ideal) <= size // 4]
        cut = min(near, key=lambda b: abs(b - ideal)) if near else ideal
        if cut > (cuts[-1] if cuts else 0):
            cuts.append(cut)
    edges = [0, *cuts, total]
    return list(itertools.pairwise(edges))


def concat_list(names: list[str]) -> str:
    """The concat demuxer's list of the segments (plain names in the working directory)."""
    return "".join(f"file '{name}'\n" for name in names)


def join_args(list_file: str, sound: str, output: str, container: str) -> list[str]:
    """Join the segments' picture and the sound into `output`, copying both."""
    args = [
        "-f", "concat", "-safe", "0", "-protocol_whitelist", "file", "-i", list_file,
        "-i", sound, "-map", "0:v:0", "-map", "1:a:0", "-c", "copy",
    ]  # fmt: skip
    if container == "mp4":
        args += ["-movflags", "+faststart"]
    return [*args, output]


def poster_args(video: str, at_s: float, output: str) -> list[str]:
    """One frame of the finished video as a JPEG."""
    return ["-ss", num(at_s), "-i", video, "-frames:v", "1", "-q:v", "3", output]


def poster_time(timeline: Timeline) -> float:
    """The poster's frame: where the timeline says, else the middle, on a frame."""
    rate = timeline.output.rate
    at = timeline.output.poster if timeline.output.poster is not None else timeline.duration / 2
    return float(Fraction(frames(at, rate)) / rate)


def preview_scale(timeline: Timeline) -> float:
    """How much a preview shrinks the picture: to PREVIEW_HEIGHT lines, never larger."""
    return min(1.0, PREVIEW_HEIGHT / timeline.output.height)
