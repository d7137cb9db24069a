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

from pydantic import ValidationError

from vidstream.compose.caption_style import DEFAULT as DEFAULT_CAPTIONS
from vidstream.compose.caption_style import CaptionFields, CaptionStyle
from vidstream.core.errors import PermanentError
from vidstream.media.transcript import MAX_SPEAKERS

Format = Literal["json", "srt", "vtt", "ass", "txt"]
ALL_FORMATS: tuple[Format, ...] = ("json", "srt", "vtt", "ass", "txt")  # in the order stored
FORMATS: tuple[Format, ...] = ("json", "srt", "vtt")  # what a job stores unless it asks
_LANGUAGE_RE = re.compile(r"[a-z]{2,3}")
# A model's name is its folder's (`media.models`), and reaches a command line: nothing else.
_MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TASKS = ("transcribe", "translate")  # Whisper's: write the speech down, or in English


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


def model_of(value: object) -> str:
    """A Whisper model's name ("" or null: the deployment's default)."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not _MODEL_RE.fullmatch(value):
        raise invalid("model must be the name of a model (GET /v1/models)")
    return value


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


def task_of(value: object) -> str:
    if value not in TASKS:
        raise invalid(f"task must be one of {', '.join(TASKS)}")
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
    # The captions' layout (in the burnt-in video, the track and the SRT, VTT and ASS files)
    # and look (burnt in, and the ASS file); given and shown as options of their own.
    captions: CaptionStyle = DEFAULT_CAPTIONS
    model: str = ""  # the Whisper model's name; "" the deployment's default
    task: str = "transcribe"  # or "translate": the captions in English
    speakers: int | None = None  # how many to tell apart (0: "auto"); None: not told apart

    # Each option a client may give, with its parser; a subclass adds its own.
    PARSERS: ClassVar[Mapping[str, Callable[[object], Any]]] = {
        "language": language_of,
        "burn_subtitles": flag("burn_subtitles"),
        "formats": formats_of,
        "model": model_of,
        "task": task_of,
        "speakers": speakers_of,
    }

    @property
    def written_in(self) -> str | None:
        """The captions' language: English when translated, else the one spoken (None when
        Whisper detects it)."""
        return "en" if self.task == "translate" else self.language

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        """Options as a client sent them (or as stored); raise `PermanentError` saying what is
        wrong. An option not given takes its default."""
        unknown = set(data) - set(cls.PARSERS) - set(CaptionFields.model_fields)
        if unknown:
            raise invalid(f"unknown option(s): {', '.join(sorted(unknown))[:80]}")
        given = {name: value for name, value in data.items() if name in cls.PARSERS}
        parsed = {name: cls.PARSERS[name](value) for name, value in given.items()}
        style = {name: value for name, value in data.items() if name not in cls.PARSERS}
        if style:
            parsed["captions"] = captions_of(style)
        return cls(**parsed)

    def to_dict(self) -> dict[str, Any]:
        """As stored and as shown to the client: every option, but an extension's only when it
        is not its default (a job stored before it existed reads back the same)."""
        data: dict[str, Any] = {
            "language": self.language,
            "burn_subtitles": self.burn_subtitles,
            "formats": list(self.formats),
        }
        for f in dataclasses.fields(self):
            if f.name not in data and f.name != "captions" and getattr(self, f.name) != f.default:
                data[f.name] = getattr(self, f.name)
        return {**data, **self.captions.changes()}


def captions_of(fields: Mapping[str, Any]) -> CaptionStyle:
    """The caption model of its fields as given, every problem in one `invalid_request`."""
    try:
        return CaptionStyle.model_validate(dict(fields))
    except ValidationError as exc:
        raise invalid(problems(exc)) from None


def problems(exc: ValidationError) -> str:
    """Every problem pydantic found, each with where it is, in one sentence."""
    said = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
        said.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    return "; ".join(said)
