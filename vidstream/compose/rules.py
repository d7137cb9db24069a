"""Whether a timeline can be rendered: its shape (the models), and the rules across fields and
the operator's limits. Every problem names its path (`tracks[2].clips[0].start`) and its rule, so
a client can point at the field; all of them are reported at once, not the first only: the rules
across fields run on every part that parsed (`compose.parts`), beside the fields' problems.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from vidstream.compose import memory
from vidstream.compose.parts import Parts, salvage
from vidstream.compose.timeline import (
    SOUNDING,
    AudioClip,
    Clip,
    ColorClip,
    ImageClip,
    SubtitlesClip,
    TextClip,
    Timeline,
    VideoClip,
    frames,
)
from vidstream.core.errors import PermanentError

MAX_PROBLEMS = 20  # reported at once; a timeline wrong everywhere needs no longer list
_CLIP_TYPES = frozenset({"video", "image", "color", "text", "audio", "subtitles"})


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # such as "tracks[2].clips[0].start"; "" for the timeline as a whole
    rule: str  # a short name: "greater_than_equal", "too_long", "overlaps_end"
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "rule": self.rule, "message": self.message}


class InvalidTimeline(PermanentError):
    """The timeline cannot be rendered; `problems` says where and why."""

    code = "invalid_timeline"

    def __init__(self, problems: Sequence[Problem]) -> None:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        where = f"{first.path}: " if first.path else ""
        super().__init__(f"{where}{first.message}{more}")
        self.problems = list(problems)[:MAX_PROBLEMS]


@dataclass(frozen=True, slots=True)
class Limits:
    max_tracks: int
    max_clips: int
    max_duration_s: float
    max_pixels: int  # the output's, and each clip's box
    max_memory_bytes: int = 4 * 1024**3  # what one FFmpeg holds (`compose.memory`)


def path_of(loc: Sequence[int | str], prefix: str = "") -> str:
    """pydantic's error location as a path a person reads; the union's tag is left out."""
    text = prefix
    for i, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
        elif not (part in _CLIP_TYPES and i > 0 and isinstance(loc[i - 1], int)):
            text += f".{part}" if text else part
    return text


def parse(data: object, limits: Limits, prefix: str = "timeline") -> Timeline:
    """A `Timeline` from a client's JSON, or `InvalidTimeline` naming every problem: those of
    its fields, and those across fields among the parts that parsed."""
    try:
        timeline = Timeline.model_validate(data)
    except ValidationError as exc:
        problems = [
            Problem(path_of(err["loc"], prefix), err["type"], err["msg"])
            for err in exc.errors(include_url=False)
        ]
        raise InvalidTimeline([*problems, *check(salvage(data), limits, prefix)]) from None
    problems = list(check(Parts.of(timeline), limits, prefix))
    if problems:
        raise InvalidTimeline(problems)
    return timeline


def check(parts: Parts, limits: Limits, prefix: str = "timeline") -> Iterator[Problem]:
    """The rules the models cannot say alone, each where the parts it reads parsed."""
    out = parts.output
    if len(parts.tracks) > limits.max_tracks:
        yield Problem(
            f"{prefix}.tracks",
            "too_many_tracks",
            f"{len(parts.tracks)} tracks; at most {limits.max_tracks}",
        )
    if parts.clip_count > limits.max_clips:
        yield Problem(
            f"{prefix}.tracks",
            "too_many_clips",
            f"{parts.clip_count} clips; at most {limits.max_clips}",
        )
    if parts.size and parts.size[0] * parts.size[1] > limits.max_pixels:
        yield Problem(
            f"{prefix}.output",
            "too_many_pixels",
            f"{out.width}x{out.height} is more than {limits.max_pixels:,} pixels",
        )
    least = parts.least_duration()
    if least is not None and least > limits.max_duration_s:
        yield Problem(
            f"{prefix}.output.duration",
            "too_long",
            f"the video would last {least:g} s; at most {limits.max_duration_s:g} s",
        )
    end = parts.duration()
    poster = None if "poster" in parts.bad else out.poster
    if poster is not None and end is not None and poster >= end:
        yield Problem(
            f"{prefix}.output.poster",
            "after_the_end",
            f"{poster:g} s is not before the end ({end:g} s)",
        )
    yield from _memory(parts, limits, prefix)
    yield from _names(parts, prefix)
    for t, c, clip in parts.clips():
        yield from _clip(parts, clip, f"{prefix}.tracks[{t}].clips[{c}]")


def _memory(parts: Parts, limits: Limits, prefix: str) -> Iterator[Problem]:
    """All the pictures the graph holds within `max_memory_bytes`, and each clip's box within
    `max_pixels`. Counted over what parsed (without the output's size, over the clips whose
    size is their own): a floor of the whole when something did not."""
    size = parts.size
    held = memory.output_held(size) if size else 0
    held += sum(
        memory.held(clip, size or (0, 0))
        for _, _, clip in parts.clips()
        if size or memory.known(clip)
    )
    if held > limits.max_memory_bytes:
        yield Problem(
            f"{prefix}.tracks",
            "too_much_memory",
            f"the clips' pictures would take about {memory.gigabytes(held)} of memory at once; "
            f"at most {memory.gigabytes(limits.max_memory_bytes)}: make boxes or texts "
            "smaller, or use fewer clips",
        )
    for t, c, clip in parts.clips():
        if not isinstance(clip, VideoClip | ImageClip | ColorClip):
            continue
        if size is None and not memory.known(clip):
            continue  # the box is the output's, whose size did not parse
        width, height = memory.box(clip, size or (0, 0))
        if width * height > limits.max_pixels:
            yield Problem(
                f"{prefix}.tracks[{t}].clips[{c}]",
                "too_many_pixels",
                f"a {width}x{height} box is more than {limits.max_pixels:,} pixels",
            )


def _names(parts: Parts, prefix: str) -> Iterator[Problem]:
    seen: set[str] = set()
    tracks: dict[str, int] = {}
    for t, track in enumerate(parts.tracks):
        if track.name is not None:
            if track.name in tracks:
                yield Problem(
                    f"{prefix}.tracks[{t}].name",
                    "duplicate_name",
                    f"another track is named {track.name!r}",
                )
            tracks[track.name] = t
    for t, c, clip in parts.clips():
        if clip.name is not None:
            if clip.name in seen:
                yield Problem(
                    f"{prefix}.tracks[{t}].clips[{c}].name",
                    "duplicate_name",
                    f"another clip is named {clip.name!r}",
                )
            seen.add(clip.name)
        if isinstance(clip, AudioClip) and clip.duck is not None:
            path = f"{prefix}.tracks[{t}].clips[{c}].duck.under"
            under = tracks.get(clip.duck.under)
            if under is None:
                if parts.names_parsed:  # else the name may be one that did not parse
                    yield Problem(path, "unknown_track", f"no track is named {clip.duck.under!r}")
            elif under == t:
                yield Problem(path, "ducks_itself", "a track cannot duck under itself")
            elif not any(_sounds(x) for x in parts.tracks[under].clips) and all(
                parts.tracks[under].clips
            ):  # a clip there that did not parse may sound
                yield Problem(
                    path,
                    "silent_track",
                    f"the track {clip.duck.under!r} has no sound to duck under",
                )


def _sounds(clip: Clip | None) -> bool:
    return isinstance(clip, SOUNDING) and clip.volume > 0


def _clip(parts: Parts, clip: Clip, path: str) -> Iterator[Problem]:
    rate, end = parts.rate, parts.duration()
    if rate is not None and frames(clip.duration, rate) < 1:
        yield Problem(
            f"{path}.duration",
            "shorter_than_a_frame",
            f"{clip.duration:g} s is less than one frame at {float(rate):g} fps",
        )
    if end is not None and clip.end > end + 1e-9:
        yield Problem(
            f"{path}.duration",
            "after_the_end",
            f"the clip ends at {clip.end:g} s, after the video's end ({end:g} s)",
        )
    ins = clip.transition_in.duration if clip.transition_in else 0.0
    outs = clip.transition_out.duration if clip.transition_out else 0.0
    if ins + outs > clip.duration + 1e-9:
        yield Problem(
            f"{path}.transition_in",
            "transitions_too_long",
            f"transitions of {ins + outs:g} s do not fit a {clip.duration:g} s clip",
        )
    if isinstance(clip, AudioClip) and clip.fade_in + clip.fade_out > clip.duration + 1e-9:
        yield Problem(
            f"{path}.fade_in",
            "fades_too_long",
            f"fades of {clip.fade_in + clip.fade_out:g} s do not fit a {clip.duration:g} s clip",
        )
    if isinstance(clip, VideoClip | AudioClip) and clip.trim.end is not None:
        speed = clip.speed if isinstance(clip, VideoClip) else 1.0
        span = (clip.trim.end - clip.trim.start) / speed
        if clip.trim.end <= clip.trim.start:
            yield Problem(
                f"{path}.trim.end", "before_the_start", "the trim must end after it starts"
            )
        elif span + 1e-9 < clip.duration:
            yield Problem(
                f"{path}.trim",
                "shorter_than_the_clip",
                f"the trimmed part plays {span:g} s, less than the clip's {clip.duration:g} s",
            )
    if isinstance(clip, TextClip) and not clip.text.strip():
        yield Problem(f"{path}.text", "empty", "the text is empty")
    if isinstance(clip, SubtitlesClip) and clip.job is not None and clip.key is not None:
        yield Problem(f"{path}.key", "one_source", "give job or key, not both")


def as_json(timeline: Timeline) -> dict[str, Any]:
    """The timeline as stored with the job: every default spelled out."""
    return timeline.model_dump(mode="json")
