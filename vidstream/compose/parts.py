"""What of a timeline parsed: its output's fields, each track's name and each clip, taken one
by one, so the rules across fields (`rules.check`) run on every part that parsed even when
another did not, and a client hears of every problem in one answer. Pure.

A part that did not parse is left out (a clip is None, an output field is named in `bad`), and
each rule runs only where the parts it reads parsed: nothing is guessed for a value the client
got wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from vidstream.compose.timeline import Clip, Name, Output, Timeline

T = TypeVar("T")
_CLIP: TypeAdapter[Clip] = TypeAdapter(Clip)
_NAME: TypeAdapter[str | None] = TypeAdapter(Name | None, config=ConfigDict(strict=True))
_OUTPUT: TypeAdapter[Output] = TypeAdapter(Output)


@dataclass(frozen=True, slots=True)
class Track:
    name: str | None  # None: no name, or one that did not parse (`Parts.names_parsed`)
    clips: list[Clip | None]  # None: a clip that did not parse


@dataclass(frozen=True, slots=True)
class Parts:
    output: Output  # the fields that parsed; the defaults in place of those in `bad`
    tracks: list[Track]
    bad: frozenset[str] = frozenset()  # the output's fields that did not parse
    names_parsed: bool = True  # every track's name parsed
    clip_count: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "clip_count", sum(len(t.clips) for t in self.tracks))

    @classmethod
    def of(cls, timeline: Timeline) -> Parts:
        """A timeline that parsed whole."""
        tracks = [Track(t.name, list[Clip | None](t.clips)) for t in timeline.tracks]
        return cls(timeline.output, tracks)

    @property
    def complete(self) -> bool:
        return all(clip is not None for track in self.tracks for clip in track.clips)

    def clips(self) -> list[tuple[int, int, Clip]]:
        """Every clip that parsed, with its track's and its own index, in drawing order."""
        return [
            (t, c, clip)
            for t, track in enumerate(self.tracks)
            for c, clip in enumerate(track.clips)
            if clip is not None
        ]

    @property
    def rate(self) -> Fraction | None:
        return None if "fps" in self.bad else self.output.rate

    @property
    def size(self) -> tuple[int, int] | None:
        """The output's width and height, when both parsed."""
        if {"width", "height"} & self.bad:
            return None
        return self.output.width, self.output.height

    def duration(self) -> float | None:
        """The video's length, when the parts that parsed say it exactly."""
        if "duration" in self.bad:
            return None
        if self.output.duration is not None:
            return self.output.duration
        return self.least_duration() if self.complete else None

    def least_duration(self) -> float | None:
        """At least how long the video lasts: the length, or where the last clip that parsed
        ends (a clip that did not parse may end later)."""
        if "duration" in self.bad:
            return None
        if self.output.duration is not None:
            return self.output.duration
        return max((clip.end for _, _, clip in self.clips()), default=None)


def salvage(data: object) -> Parts:
    """The parts of a timeline that did not parse whole, each part on its own."""
    raw = data if isinstance(data, dict) else {}
    output, bad = _output(raw.get("output", {}))
    tracks, names_parsed = [], True
    for given in _list(raw.get("tracks")):
        track = given if isinstance(given, dict) else {}
        name = _parsed(_NAME, track.get("name"))
        names_parsed &= name is not None or track.get("name") is None
        tracks.append(Track(name, [_parsed(_CLIP, clip) for clip in _list(track.get("clips"))]))
    return Parts(output, tracks, bad, names_parsed)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _output(raw: Any) -> tuple[Output, frozenset[str]]:
    if not isinstance(raw, dict):
        return Output(), frozenset(Output.model_fields)
    kept, bad = {}, set()
    for name, value in raw.items():
        # No rule of Output spans two of its fields: each parses, or not, alone.
        if _parsed(_OUTPUT, {name: value}) is None:
            bad.add(name)
        else:
            kept[name] = value
    return Output.model_validate(kept), frozenset(bad)


def _parsed(adapter: TypeAdapter[T], value: object) -> T | None:
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None
