"""One visual clip as a filter chain: its frames, fitted to its box, with its transitions, and
where it is overlaid. Pure: the clip, the window being rendered and the asset's input label in,
filter text out.

Each chain yields exactly the clip's frames inside the window, in the clip's own time (so a fade
that began before a segment's start carries on where it was), then shifted to the window's time
for `overlay`. Still pictures (an image without zoom, a colour, a text) are drawn once and looped:
a frame costs a copy, not a scale or a font rasterisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from vidstream.compose.filters import Graph, colour, num, quoted, rate_text, seconds
from vidstream.compose.fonts import metrics, wrap_lines
from vidstream.compose.timeline import (
    ColorClip,
    ImageClip,
    TextClip,
    Transition,
    VideoClip,
    frames,
)
from vidstream.media import fonts

Visual = VideoClip | ImageClip | ColorClip | TextClip


@dataclass(frozen=True, slots=True)
class Span:
    """Where a clip meets the window being rendered, in frames."""

    start: int  # the clip's first frame on the timeline
    length: int  # the clip's frames
    skip: int  # of the clip's frames, those before the window
    count: int  # of the clip's frames, those inside the window
    offset: int  # the window's first frame (subtracted to get window time)

    @classmethod
    def of(cls, start: int, length: int, first: int, last: int) -> Span | None:
        """The clip's part in the window [first, last); None when they do not meet."""
        begin, end = max(start, first), min(start + length, last)
        if end <= begin:
            return None
        return cls(start, length, begin - start, end - begin, first)


@dataclass(frozen=True, slots=True)
class Box:
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Frame:
    """The picture being composed: its size (scaled for a preview) and rate."""

    width: int
    height: int
    rate: Fraction
    scale: float = 1.0

    def px(self, value: float) -> int:
        return round(value * self.scale)

    def size(self, value: float) -> int:
        return max(2, round(value * self.scale))


def box_of(clip: VideoClip | ImageClip | ColorClip, frame: Frame) -> Box:
    width = frame.size(clip.width) if clip.width is not None else frame.width
    height = frame.size(clip.height) if clip.height is not None else frame.height
    return Box(frame.px(clip.x), frame.px(clip.y), width, height)


def fit(mode: str, box: Box) -> list[str]:
    """Scale a picture into `box`: `cover` crops, `contain` pads with transparency, `fill`
    stretches."""
    size = f"{box.width}:{box.height}"
    if mode == "fill":
        return [f"scale={size}", "setsar=1"]
    if mode == "cover":
        # Cropped to the box's shape first, then scaled: scaling first to cover the box would
        # make a frame as large as the source's shape asks (a 2x400 picture covering 3072x3072
        # would be 3072x614400, 7.5 GB for `loop` to hold), however small the box.
        w, h = box.width, box.height
        crop = f"crop=w={quoted(f'min(iw,ih*{w}/{h})')}:h={quoted(f'min(ih,iw*{h}/{w})')}"
        return [crop, f"scale={size}", "setsar=1"]
    return [
        f"scale={size}:force_original_aspect_ratio=decrease", "setsar=1", "format=rgba",
        f"pad={size}:(ow-iw)/2:(oh-ih)/2:color=black@0",
    ]  # fmt: skip


def _hold(count: int, rate: Fraction) -> list[str]:
    """One picture as `count` frames at `rate`, timed from zero."""
    return [f"loop=loop={count - 1}:size=1:start=0", f"setpts=N/({rate_text(rate)})/TB"]


def video_frames(clip: VideoClip, span: Span, rate: Fraction, seek: float) -> list[str]:
    """The clip's frames from a video input already seeked to `seek` seconds of it."""
    begin = clip.trim.start + float(Fraction(span.skip) / rate) * clip.speed - seek
    length = float(Fraction(span.count) / rate) * clip.speed
    return [
        f"trim=start={num(max(begin, 0.0))}:duration={num(length)}",
        f"setpts=(PTS-STARTPTS)/{num(clip.speed)}",
        f"fps={rate_text(rate)}",
    ]


def image_frames(clip: ImageClip, span: Span, box: Box, rate: Fraction) -> list[str]:
    """Ken Burns through `zoompan` over a picture twice the box's size (zooming a picture no
    larger than the output steps by whole pixels, which shows as jitter); else one picture,
    held."""
    if clip.zoom is None:
        return [*fit(clip.fit, box), "format=rgba", *_hold(span.count, rate)]
    z0, z1 = clip.zoom.start, clip.zoom.end
    done = f"((on+{span.skip})/{max(span.length - 1, 1)})"
    zoom = f"{num(z0)}+{num(z1 - z0)}*{done}"
    free_x, free_y = "(iw-iw/zoom)", "(ih-ih/zoom)"
    x = {"left": f"{free_x}*(1-{done})", "right": f"{free_x}*{done}"}.get(clip.pan, f"{free_x}/2")
    y = {"up": f"{free_y}*(1-{done})", "down": f"{free_y}*{done}"}.get(clip.pan, f"{free_y}/2")
    big = Box(0, 0, box.width * 2, box.height * 2)
    return [
        *fit("cover" if clip.fit == "cover" else clip.fit, big),
        f"zoompan=z={quoted(zoom)}:x={quoted(x)}:y={quoted(y)}:d={span.count}"
        f":s={box.width}x{box.height}:fps={rate_text(rate)}",
        "format=rgba", f"setpts=N/({rate_text(rate)})/TB",
    ]  # fmt: skip


def color_source(clip: ColorClip, box: Box, rate: Fraction) -> str:
    size = f"s={box.width}x{box.height}:r={rate_text(rate)}"
    if clip.gradient is None:
        return f"color=c={colour(clip.color)}:{size}"
    x1, y1 = {
        "vertical": (0, box.height), "horizontal": (box.width, 0),
        "diagonal": (box.width, box.height),
    }[clip.gradient.direction]  # fmt: skip
    return (
        f"gradients={size}:c0={colour(clip.color)}:c1={colour(clip.gradient.to)}"
        f":x0=0:y0=0:x1={x1}:y1={y1}:nb_colors=2"
    )


@dataclass(frozen=True, slots=True)
class TextLayout:
    lines: tuple[str, ...]
    box: Box  # the canvas the lines are drawn on, placed on the frame
    pad: int  # from the canvas's edge to the text
    size: int
    line_height: int


def text_layout(clip: TextClip, frame: Frame) -> TextLayout:
    """Lines wrapped at full size (a preview wraps the same), then scaled."""
    full_width = clip.width or round(frame.width / frame.scale * 0.9)
    measure = metrics(fonts.font_file(clip.font, clip.bold))
    lines = wrap_lines(clip.text, measure, clip.size, full_width)
    size = max(frame.px(clip.size), 4)
    pad = frame.px(clip.outline + (round(clip.size * 0.25) if clip.box else 0))
    line_height = max(round(size * clip.line_spacing), 1)
    width = frame.size(full_width) + 2 * pad
    height = len(lines) * line_height + 2 * pad
    x = frame.px(clip.x) - pad if clip.x is not None else (frame.width - width) // 2
    y = frame.px(clip.y) - pad if clip.y is not None else (frame.height - height) // 2
    return TextLayout(tuple(lines), Box(x, y, width, height), pad, size, line_height)


def text_frames(
    clip: TextClip, layout: TextLayout, files: list[str], span: Span, rate: Fraction
) -> tuple[str, list[str]]:
    """A transparent canvas with the lines drawn once (each from its own file, named in
    `files`: `drawtext` reads text from a file, so nothing in it needs escaping), then held."""
    box, pad = layout.box, layout.pad
    font = fonts.in_workdir(clip.font, clip.bold)  # `fonts.link` puts it there
    x = {"left": str(pad), "right": f"w-text_w-{pad}"}.get(clip.align, "(w-text_w)/2")
    draws = []
    for i, name in enumerate(files):
        options = [
            f"fontfile={font}", f"textfile={name}", "expansion=none",
            f"fontsize={layout.size}", f"fontcolor={colour(clip.color)}",
            f"x={quoted(x)}", f"y={pad + i * layout.line_height}",
        ]  # fmt: skip
        if clip.outline:
            options += [f"borderw={max(round(clip.outline * layout.size / clip.size), 1)}",
                        f"bordercolor={colour(clip.outline_color)}"]  # fmt: skip
        if clip.box:
            options += ["box=1", f"boxcolor={colour(clip.box)}", f"boxborderw={pad}"]
        draws.append("drawtext=" + ":".join(options))
    source = f"color=c=black@0:s={box.width}x{box.height}:r={rate_text(rate)}"
    return source, ["format=rgba", "trim=end_frame=1", *draws, *_hold(span.count, rate)]


def finish(clip: Visual, span: Span, rate: Fraction) -> list[str]:
    """From frames timed from the window's part of the clip to frames in the window's time,
    with fades and opacity on the way (in the clip's own time, which a segment continues)."""
    local = f"setpts=PTS-STARTPTS+{seconds(span.skip, rate)}/TB"
    steps = [local]
    if clip.transition_in and clip.transition_in.type == "fade":
        steps.append(f"fade=t=in:st=0:d={num(clip.transition_in.duration)}:alpha=1")
    if clip.transition_out and clip.transition_out.type == "fade":
        out_at = Fraction(span.length) / rate - Fraction(clip.transition_out.duration)
        steps.append(f"fade=t=out:st={num(max(out_at, Fraction(0)))}"
                     f":d={num(clip.transition_out.duration)}:alpha=1")  # fmt: skip
    zooms = [t for t in (clip.transition_in, clip.transition_out) if t and t.type == "zoom"]
    if zooms:
        steps.append(_zoom_scale(clip, span, rate))
    if clip.opacity < 1:
        steps.append(f"colorchannelmixer=aa={num(clip.opacity)}")
    steps.append(f"setpts=PTS+({span.start - span.offset})/({rate_text(rate)})/TB")
    return steps


def _zoom_scale(clip: Visual, span: Span, rate: Fraction) -> str:
    """Grow from nothing over the transition in, shrink to nothing over the one out."""
    parts = ["1"]
    if clip.transition_in and clip.transition_in.type == "zoom":
        parts.append(f"t/{num(clip.transition_in.duration)}")
    if clip.transition_out and clip.transition_out.type == "zoom":
        end = Fraction(span.length) / rate
        parts.append(f"({num(end)}-t)/{num(clip.transition_out.duration)}")
    smallest = parts[0]
    for part in parts[1:]:  # FFmpeg's min() takes two arguments, no more
        smallest = f"min({smallest},{part})"
    factor = f"max(0.02,{smallest})"
    return (
        f"scale=w={quoted(f'max(2,trunc(iw*{factor}/2)*2)')}"
        f":h={quoted(f'max(2,trunc(ih*{factor}/2)*2)')}:eval=frame"
    )


def placement(clip: Visual, box: Box, span: Span, frame: Frame) -> tuple[str, str]:
    """Overlay x and y, moving while a slide runs; a zoomed clip stays centred in its box."""
    rate = frame.rate
    begin = Fraction(span.start - span.offset) / rate
    end = begin + Fraction(span.length) / rate
    x, y = str(box.x), str(box.y)
    if any(t and t.type == "zoom" for t in (clip.transition_in, clip.transition_out)):
        x, y = f"{box.x}+({box.width}-w)/2", f"{box.y}+({box.height}-h)/2"
    for transition, entering in ((clip.transition_in, True), (clip.transition_out, False)):
        if transition is None or transition.type != "slide":
            continue
        x, y = _slide(transition, entering, x, y, box, frame, begin, end)
    return x, y


def _slide(
    transition: Transition, entering: bool, x: str, y: str, box: Box, frame: Frame,
    begin: Fraction, end: Fraction,
) -> tuple[str, str]:  # fmt: skip
    length = Fraction(transition.duration)
    if entering:  # 1 off-screen at the start, 0 in place after `length`
        away = f"(1-min(max((t-{num(begin)})/{num(length)},0),1))"
    else:  # 0 until `length` before the end, 1 off-screen at the end
        away = f"min(max((t-{num(end - length)})/{num(length)},0),1)"
    # How far it moves to be just off the frame on that side (FFmpeg's expressions read no
    # "+-", so the sign is the operator).
    move = {
        "left": f"-({box.x}+{box.width})", "right": f"+({frame.width}-{box.x})",
        "top": f"-({box.y}+{box.height})", "bottom": f"+({frame.height}-{box.y})",
    }[transition.side]  # fmt: skip
    if transition.side in ("left", "right"):
        return f"{x}{move}*{away}", y
    return x, f"{y}{move}*{away}"


def span_of(clip: Visual, rate: Fraction, first: int, last: int) -> Span | None:
    return Span.of(frames(clip.start, rate), max(frames(clip.duration, rate), 1), first, last)


__all__ = ["Graph", "Span", "Visual"]
