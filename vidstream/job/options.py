"""A job's options: what its client chose, checked. Each kind declares its own options class
(`kinds`); the ones that make subtitles share `Options`, and the others extend it.

Every option has one parser, used both for a request (through the kind's request model) and for
a job read back from Redis, so a value is checked the same way wherever it comes from.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

from vidstream.core.errors import PermanentError
from vidstream.media.speakers import MAX_SPEAKERS

Format = Literal["json", "srt", "vtt", "ass", "txt"]
ALL_FORMATS: tuple[Format, ...] = ("json", "srt", "vtt", "ass", "txt")  # in the order stored
FORMATS: tuple[Format, ...] = ("json", "srt", "vtt")  # what a job stores unless it asks
_LANGUAGE_RE = re.compile(r"[a-z]{2,3}")


def invalid(message: str) -> PermanentError:
    return PermanentError(message, code="invalid_request")


def language_of(value: object) -> str | None:
    """An ISO 639 code, lower-cased; None (Whisper detects it) for "auto", "" or null."""
    if value in (None, "", "auto"):
        return None
    if not isinstance(value, str) or not _LANGUAGE_RE.fullmatch(value.lower()):
        raise invalid("language must be an ISO 639-1 code such as 'en', or 'auto'")
    return value.lower()


def formats_of(value: object) -> tuple[str, ...]:
    """The transcript formats to store, from a list or a comma-separated string. The JSON is
    always kept: it is the word-level source of truth the render stage reads."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, tuple):
        value = list(value)
    choices = ", ".join(ALL_FORMATS)
    if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
        raise invalid(f"formats must be a list drawn from {choices}")
    bad = [f for f in value if f not in ALL_FORMATS]
    if bad:
        raise invalid(f"unknown format(s) {', '.join(bad)[:40]}; choose from {choices}")
    return tuple(f for f in ALL_FORMATS if f in value or f == "json")


CHARS_PER_LINE = (10, 80)  # a caption line's length a client may ask for, in characters
LINES = (1, 3)  # lines a caption may have
POSITIONS = ("bottom", "top")  # where burnt-in captions sit


def bounded(name: str, low: int, high: int) -> Callable[[object], int]:
    """The parser of a whole-number option between `low` and `high` (a form field's digits
    too)."""

    def parse(value: object) -> int:
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise invalid(f"{name} must be a whole number from {low} to {high}")
        return value

    return parse


def speakers_of(value: object) -> int | None:
    """How many speakers to tell apart: 1 to 8, 0 for "auto" (as many as can be told apart),
    None (null, "" or absent) for not telling them apart at all."""
    if value in (None, ""):
        return None
    if value == "auto":
        return 0
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SPEAKERS:
        raise invalid(f"speakers must be a whole number from 1 to {MAX_SPEAKERS}, or 'auto'")
    return value


def position_of(value: object) -> str:
    if value not in POSITIONS:
        raise invalid(f"position must be one of {', '.join(POSITIONS)}")
    return str(value)


def flag(name: str) -> Callable[[object], bool]:
    """The parser of a true-or-false option called `name`."""

    def parse(value: object) -> bool:
        if not isinstance(value, bool):
            raise invalid(f"{name} must be true or false")
        return value

    return parse


@dataclass(frozen=True, slots=True)
class Options:
    """The options of a kind that makes subtitles (subtitle, transcribe): the spoken language,
    burnt in or a track, and the transcript's formats."""

    language: str | None = "en"  # None = let Whisper detect it
    burn_subtitles: bool = True
    formats: tuple[str, ...] = FORMATS
    # The captions' layout: in the burnt-in video, the track and the SRT, VTT and ASS files.
    max_chars_per_line: int = 42
    max_lines: int = 2
    position: str = "bottom"  # of burnt-in captions: bottom or top centre
    speakers: int | None = None  # how many to tell apart (0: "auto"); None: not told apart
    speaker_labels: bool = False  # a caption starts "[Speaker N]" where the speaker changes

    # Each option a client may give, with its parser; a subclass adds its own.
    PARSERS: ClassVar[Mapping[str, Callable[[object], Any]]] = {
        "language": language_of,
        "burn_subtitles": flag("burn_subtitles"),
        "formats": formats_of,
        "max_chars_per_line": bounded("max_chars_per_line", *CHARS_PER_LINE),
        "max_lines": bounded("max_lines", *LINES),
        "position": position_of,
        "speakers": speakers_of,
        "speaker_labels": flag("speaker_labels"),
    }

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        """Options as a client sent them (or as stored); raise `PermanentError` saying what is
        wrong. An option not given takes its default."""
        unknown = set(data) - set(cls.PARSERS)
        if unknown:
            raise invalid(f"unknown option(s): {', '.join(sorted(unknown))[:80]}")
        return cls(**{name: cls.PARSERS[name](value) for name, value in data.items()})

    def to_dict(self) -> dict[str, Any]:
        """As stored and as shown to the client: every option, but an extension's only when it
        is not its default (a job stored before it existed reads back the same)."""
        data: dict[str, Any] = {
            "language": self.language,
            "burn_subtitles": self.burn_subtitles,
            "formats": list(self.formats),
        }
        for f in dataclasses.fields(self):
            if f.name not in data and getattr(self, f.name) != f.default:
                data[f.name] = getattr(self, f.name)
        return data
