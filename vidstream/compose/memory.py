"""How much memory a timeline's graph holds, estimated before the job is queued. Pure.

FFmpeg sets up every clip's chain when it starts, and `overlay` pulls a first picture from each
of its inputs at once to learn its time: a clip's pictures are held from the start of the render
whatever the clip's time, so the graph holds the sum of its clips' pictures. Each is a full-size
RGBA picture of the clip's box (4 bytes a pixel), held a few times over: by its source, by
`loop` (a still), by `fade` and `colorchannelmixer`, which copy, and by `overlay`'s queue.

Measured with FFmpeg 9 (`tests/test_compose_graph.py` checks each kind against it): resident
memory of one clip's graph less that of a bare one, per pixel of the box. A still (colour,
image, text) holds 8.6 to 14.7 bytes (a fade and opacity copy it), an image with Ken Burns 28 to
36 (it is scaled to twice the box first), a video 9.4 to 24 (with a fade), the output picture
20; each clip about 0.45 MB besides. Eight colour clips of 12000x12000 held 7.3 GB.
"""

from __future__ import annotations

import math

from vidstream.compose.timeline import Clip, ColorClip, ImageClip, TextClip, VideoClip
from vidstream.media import text as plain

BYTES_PER_PIXEL = 4  # RGBA
STILL_PICTURES = 4  # a colour, an image or a text: source, held copy, a fade's copy, queued
VIDEO_PICTURES = 7  # decoded, scaled, converted to RGBA, faded, queued, held at the end
ZOOM_PICTURES = 6  # Ken Burns adds a picture twice the box's width and height, and its scaling
OUTPUT_PICTURES = 6  # the background, each overlay's result, the conversion to YUV
CLIP_BYTES = 512 * 1024  # a clip's filters, whatever its size
# The widest advance of any glyph in the declared font files, in ems (DejaVu Serif's is 2.14):
# no line of a text clip holds less text than this many ems allows.
MAX_ADVANCE_EM = 2.2
TEXT_WIDTH = 0.9  # of the output's width: a text clip's lines without a width of their own


def known(clip: Clip) -> bool:
    """Whether the clip's size is its own, whatever the output's."""
    if isinstance(clip, VideoClip | ImageClip | ColorClip):
        return clip.width is not None and clip.height is not None
    return not isinstance(clip, TextClip) or clip.width is not None


def box(clip: VideoClip | ImageClip | ColorClip, output: tuple[int, int]) -> tuple[int, int]:
    """The clip's box: its width and height, the output's where it gives none."""
    return clip.width or output[0], clip.height or output[1]


def text_box(clip: TextClip, output: tuple[int, int]) -> tuple[int, int]:
    """At most how large the canvas a text clip is drawn on (`visuals.text_layout`) can be.

    Without measuring: a greedy wrap starts a line only when the next word does not fit, so two
    lines together hold more than a line's width of text, and text is never wider than its
    characters at the widest advance.
    """
    width = clip.width or round(output[0] * TEXT_WIDTH)
    pad = clip.outline + (round(clip.size * 0.25) if clip.box else 0)
    paragraphs = plain.lines(clip.text)
    characters = sum(len(p) for p in paragraphs)
    wrapped = 2 * characters * MAX_ADVANCE_EM * clip.size / max(width, 1)
    lines = len(paragraphs) + min(characters, math.ceil(wrapped))
    return width + 2 * pad, lines * max(round(clip.size * clip.line_spacing), 1) + 2 * pad


def held(clip: Clip, output: tuple[int, int]) -> int:
    """The bytes the clip holds while the graph runs: its pictures and its filters."""
    if isinstance(clip, TextClip):
        width, height = text_box(clip, output)
        return CLIP_BYTES + width * height * BYTES_PER_PIXEL * STILL_PICTURES
    if not isinstance(clip, VideoClip | ImageClip | ColorClip):
        return CLIP_BYTES
    width, height = box(clip, output)
    pictures = VIDEO_PICTURES if isinstance(clip, VideoClip) else STILL_PICTURES
    if isinstance(clip, ImageClip) and clip.zoom is not None:
        pictures += ZOOM_PICTURES
    return CLIP_BYTES + width * height * BYTES_PER_PIXEL * pictures


def output_held(output: tuple[int, int]) -> int:
    return output[0] * output[1] * BYTES_PER_PIXEL * OUTPUT_PICTURES


def gigabytes(count: int) -> str:
    return f"{count / 1e9:.1f} GB"
