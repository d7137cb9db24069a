"""A validated timeline as one FFmpeg invocation. Pure: the timeline, what the render learned of
each asset, and what part to render in; arguments and the text files they read out.

The graph: a background of the output's size; each visual clip, in drawing order, overlaid on it
for its frames (`overlay` with `enable`), subtitles drawn by libass at their place in that order
(the burn-in path); every sounding clip mixed, ducked where asked. Each asset is one input, split
when several clips use it; an input only one clip uses is seeked (`-ss`) to where that clip
starts, so a segment of a long video does not decode what comes before it.

A `Window` renders a part (a segment of frames [first, last), video or sound alone) or a preview
(everything scaled): segments rendered apart and concatenated have the same frames as a whole.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from vidstream.compose import sound, visuals
from vidstream.compose.filters import Graph, colour, num, quoted, rate_text, seconds
from vidstream.compose.timeline import (
    AudioClip,
    ColorClip,
    ImageClip,
    SubtitlesClip,
    TextClip,
    Timeline,
    VideoClip,
    frames,
)
from vidstream.compose.visuals import Box, Frame, Span
from vidstream.media import fonts
from vidstream.media.ffmpeg import Encoder, source_input


@dataclass(frozen=True, slots=True)
class Asset:
    """A storage key as the render found it: a local file, probed."""

    path: str
    demuxer: str  # forced with -f: what was probed is what FFmpeg reads
    duration: float = 0.0  # 0 for a picture
    has_audio: bool = False


@dataclass(frozen=True, slots=True)
class Window:
    """What one FFmpeg run makes."""

    first: int = 0  # frames [first, last) of the timeline
    last: int | None = None  # None: to the end
    video: bool = True
    audio: bool = True
    scale: float = 1.0  # a preview: every size times this
    encoder: Encoder = field(default_factory=Encoder)
    max_pixels: int | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    args: list[str]  # after the FFmpeg binary
    files: dict[str, str] = field(default_factory=dict)  # name -> text the graph reads
    frames: int = 0  # frames of picture it makes


def total_frames(timeline: Timeline) -> int:
    return max(frames(timeline.duration, timeline.output.rate), 1)


def captions_file(track: int, clip: int) -> str:
    """The ASS file the render writes for a subtitles clip (the graph only names it)."""
    return f"captions-{track}-{clip}.ass"


def build(
    timeline: Timeline, assets: Mapping[str, Asset], output: str, window: Window = Window()
) -> Plan:
    out = timeline.output
    rate, total = out.rate, total_frames(timeline)
    first, last = window.first, min(window.last or total, total)
    frame = Frame(_even(out.width * window.scale), _even(out.height * window.scale), rate,
                  window.scale)  # fmt: skip
    graph, files = Graph(), dict[str, str]()
    inputs = _Inputs(timeline, assets, first, last, window)
    maps: list[str] = []
    if window.video:
        maps += ["-map", f"[{_picture(graph, timeline, frame, inputs, first, last, files)}]"]
    if window.audio:
        voices = [
            sound.Voice(t, clip, inputs.audio(clip), inputs.seek(clip))
            for t, _, clip in timeline.clips()
            if isinstance(clip, AudioClip | VideoClip) and _sounds(clip, assets)
        ]
        maps += ["-map", f"[{sound.mix(graph, timeline, voices, total)}]"]
    inputs.split_shared(graph)
    args = [*inputs.args, "-filter_complex", graph.text(), *maps]
    args += _codecs(out.format, window)
    args += ["-progress", "pipe:1", "-nostats", output]
    return Plan(args, files, last - first if window.video else 0)


def faces(timeline: Timeline) -> tuple[tuple[str, bool], ...]:
    """The (family, bold) of each font file a timeline's graphs draw with, from `fonts.DIR`:
    its text clips', and the captions' in both weights (the bold preset is bold)."""
    found: dict[tuple[str, bool], None] = {}
    for _, _, clip in timeline.clips():
        if isinstance(clip, TextClip):
            found.setdefault((clip.font, clip.bold))
        elif isinstance(clip, SubtitlesClip):
            family = clip.caption_style().look().font
            found.setdefault((family, False))
            found.setdefault((family, True))
    return tuple(found)


def _sounds(clip: AudioClip | VideoClip, assets: Mapping[str, Asset]) -> bool:
    """Whether the clip adds sound: not muted, and (a video) its file has some."""
    return clip.volume > 0 and (isinstance(clip, AudioClip) or assets[clip.key].has_audio)


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def _picture(
    graph: Graph, timeline: Timeline, frame: Frame, inputs: _Inputs, first: int, last: int,
    files: dict[str, str],
) -> str:  # fmt: skip
    rate = frame.rate
    current = graph.chain([], [
        f"color=c={colour(timeline.output.background)}:s={frame.width}x{frame.height}"
        f":r={rate_text(rate)}",
        f"trim=end_frame={last - first}", f"setpts=N/({rate_text(rate)})/TB",
    ], "v")  # fmt: skip
    for t, c, clip in timeline.clips():
        if isinstance(clip, SubtitlesClip):
            shift = seconds(first, rate)
            # libass draws with the declared files the render links into `fonts.DIR`.
            steps = [f"ass=filename={captions_file(t, c)}:fontsdir={fonts.DIR}"]
            if first:  # the captions are timed on the whole video
                steps = [f"setpts=PTS+{shift}/TB", *steps, f"setpts=PTS-{shift}/TB"]
            current = graph.chain([current], steps, "v")
            continue
        if isinstance(clip, AudioClip):
            continue
        span = visuals.span_of(clip, rate, first, last)
        if span is None:
            continue
        box, layer = _layer(graph, clip, span, frame, inputs, files, f"text-{t}-{c}")
        x, y = visuals.placement(clip, box, span, frame)
        begin, end = span.start - first + span.skip, span.start - first + span.skip + span.count
        enable = f"between(t,{seconds(begin, rate)},{num((Fraction(end) - Fraction(1, 2)) / rate)})"
        current = graph.chain([current, layer], [
            f"overlay=x={quoted(x)}:y={quoted(y)}:eof_action=pass:enable={quoted(enable)}"
        ], "v")  # fmt: skip
    return graph.chain([current], ["format=yuv420p"], "v")


def _layer(
    graph: Graph, clip: visuals.Visual, span: Span, frame: Frame, inputs: _Inputs,
    files: dict[str, str], text_name: str,
) -> tuple[Box, str]:  # fmt: skip
    rate = frame.rate
    if isinstance(clip, TextClip):
        layout = visuals.text_layout(clip, frame)
        names = [f"{text_name}-{i}.txt" for i in range(len(layout.lines))]
        files.update(zip(names, layout.lines, strict=True))
        source, steps = visuals.text_frames(clip, layout, names, span, rate)
        return layout.box, graph.chain([], [source, *steps, *visuals.finish(clip, span, rate)])
    box = visuals.box_of(clip, frame)
    if isinstance(clip, ColorClip):
        steps = ["format=rgba", "trim=end_frame=1", *visuals._hold(span.count, rate)]
        source = visuals.color_source(clip, box, rate)
        return box, graph.chain([], [source, *steps, *visuals.finish(clip, span, rate)])
    if isinstance(clip, ImageClip):
        steps = visuals.image_frames(clip, span, box, rate)
        return box, graph.chain([inputs.video(clip)], [*steps, *visuals.finish(clip, span, rate)])
    steps = visuals.video_frames(clip, span, rate, inputs.seek(clip))
    steps += visuals.fit(clip.fit, box)
    alpha = clip.opacity < 1 or clip.transition_in or clip.transition_out
    if alpha and "format=rgba" not in steps:
        steps.append("format=rgba")
    # A source shorter than its clip holds its last picture to the clip's end.
    steps += [f"tpad=stop_mode=clone:stop_duration={seconds(span.count, rate)}",
              f"trim=end_frame={span.count}"]  # fmt: skip
    return box, graph.chain([inputs.video(clip)], [*steps, *visuals.finish(clip, span, rate)])


class _Inputs:
    """Each asset the window uses, as one `-i`; its streams split among the clips using them."""

    def __init__(
        self, timeline: Timeline, assets: Mapping[str, Asset], first: int, last: int,
        window: Window,
    ) -> None:  # fmt: skip
        rate = timeline.output.rate
        self.args: list[str] = []
        self._index: dict[str, int] = {}
        self._uses: Counter[tuple[str, str]] = Counter()
        self._seeks: dict[str, float] = {}
        self._given: dict[tuple[str, str], list[str]] = {}
        users: Counter[str] = Counter()
        used: list[tuple[str, str]] = []
        for _, _, clip in timeline.clips():
            seen = (
                visuals.span_of(clip, rate, first, last)
                if isinstance(clip, VideoClip | ImageClip)
                else None
            )
            if window.video and seen is not None and isinstance(clip, VideoClip | ImageClip):
                used.append((clip.key, "v"))
            if window.audio and isinstance(clip, AudioClip | VideoClip) and _sounds(clip, assets):
                used.append((clip.key, "a"))
        for key, kind in used:
            self._uses[key, kind] += 1
        for key in dict.fromkeys(k for k, _ in used):
            users[key] = max(self._uses[key, "v"], self._uses[key, "a"])
        for key in dict.fromkeys(k for k, _ in used):
            asset = assets[key]
            self._index[key] = len(self._index)
            seek = 0.0
            if users[key] == 1 and asset.duration > 0:
                seek = self._start_of(timeline, key, first, rate)
            self._seeks[key] = seek
            if seek > 0:
                self.args += ["-ss", num(seek)]
            self.args += source_input(asset.path, asset.demuxer, window.max_pixels)

    @staticmethod
    def _start_of(timeline: Timeline, key: str, first: int, rate: Fraction) -> float:
        """Where the one clip using `key` starts reading it in this window, in its seconds."""
        for _, _, clip in timeline.clips():
            if isinstance(clip, VideoClip | AudioClip) and clip.key == key:
                speed = clip.speed if isinstance(clip, VideoClip) else 1.0
                skip = max(first - frames(clip.start, rate), 0)
                return clip.trim.start + float(Fraction(skip) / rate) * speed
        return 0.0

    def seek(self, clip: VideoClip | ImageClip | AudioClip) -> float:
        return self._seeks.get(clip.key, 0.0)

    def video(self, clip: VideoClip | ImageClip) -> str:
        return self._take(clip.key, "v")

    def audio(self, clip: VideoClip | AudioClip) -> str:
        return self._take(clip.key, "a")

    def _take(self, key: str, kind: str) -> str:
        # Labels are handed out now and connected to the input (split if need be) at the end,
        # once every clip has asked.
        given = self._given.setdefault((key, kind), [])
        label = f"in{self._index[key]}{kind}{len(given)}"
        given.append(label)
        return label

    def split_shared(self, graph: Graph) -> None:
        for (key, kind), labels in self._given.items():
            stream = f"{self._index[key]}:{kind}:0"
            split = "asplit" if kind == "a" else "split"
            graph.chains.insert(
                0,
                f"[{stream}]{split}={len(labels)}" + "".join(f"[{label}]" for label in labels)
                if len(labels) > 1
                else f"[{stream}]{'anull' if kind == 'a' else 'null'}[{labels[0]}]",
            )


def _codecs(container: str, window: Window) -> list[str]:
    enc = window.encoder
    args: list[str] = []
    if window.video and container == "webm":
        args += ["-c:v", "libvpx-vp9", "-crf", "32", "-b:v", "0", "-deadline", "realtime",
                 "-cpu-used", "8", "-row-mt", "1"]  # fmt: skip
    elif window.video:
        args += ["-c:v", "libx264", "-preset", enc.preset, "-crf", str(enc.crf)]
    if window.audio:
        args += ["-c:a", "libopus", "-b:a", "128k"] if container == "webm" else [
            "-c:a", "aac", "-b:a", enc.audio_bitrate]  # fmt: skip
    if container == "mp4":
        args += ["-movflags", "+faststart"]
    return args


__all__ = ["Asset", "Plan", "Window", "build", "captions_file", "faces", "num", "total_frames"]
