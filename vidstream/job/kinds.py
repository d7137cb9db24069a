"""The kinds of job, each declared once: its request body, its options, its pipeline of stages
and the module that takes its requests in and runs its stages.

Everyone who needs to know about kinds reads them here: the gateway validates a request against
its kind's `request` model (which the OpenAPI document also shows, and `GET /v1/kinds` lists),
the stage workers run what its `handler` module (`vidstream.kinds`) declares for their stage,
the protocol and the Lua scripts follow its `pipeline`, retention asks whether it owns its
source, `vidstream submit` and the page offer the kinds that start from a video.

A new kind is an entry here (a `Kind` member and its `KindSpec`) and its handler module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from vidstream.compose.caption_style import CaptionFields
from vidstream.core.errors import PermanentError
from vidstream.job.options import (
    FORMATS,
    Format,
    Options,
    flag,
    formats_of,
    invalid,
    language_of,
    model_of,
    speakers_of,
    task_of,
)
from vidstream.job.stages import Priority, Stage, parse_priority

T = TypeVar("T")
Weights = Mapping[Stage, float]


class Kind(StrEnum):
    """What a job makes; `KINDS` declares each."""

    SUBTITLE = "subtitle"  # transcript, then the video with subtitles
    TRANSCRIBE = "transcribe"  # transcript only (JSON, SRT, VTT)
    COMPOSE = "compose"  # a video rendered from a timeline (and a transcript, if asked)
    RENDER = "render"  # a finished job's video again, with a transcript its user corrected


DEFAULT = Kind.SUBTITLE  # what a request that names no kind asks for


def parse_kind(value: object) -> Kind:
    """A job kind as a client sent it; raise `PermanentError` naming the choices."""
    try:
        return Kind(str(value))
    except ValueError:
        raise invalid(f"kind must be one of {', '.join(KINDS)}") from None


# -- pipelines ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The stages a job runs, in order, and what each weighs in its progress."""

    stages: tuple[Stage, ...]
    # How much of the whole job each stage accounts for, given the job's options.
    weigh: Callable[[Options], Weights]
    # Whether the source must have a picture: its video is rendered. Otherwise sound alone (a
    # podcast, a compose job's narration) will do.
    needs_picture: bool = False

    @property
    def first(self) -> Stage:
        return self.stages[0]

    def next_stage(self, stage: Stage) -> Stage | None:
        """The stage after `stage`, or None when `stage` ends the job."""
        index = self.stages.index(stage)
        return self.stages[index + 1] if index + 1 < len(self.stages) else None

    def first_unfinished(self, done: frozenset[Stage]) -> Stage:
        """Where a replayed job starts again: the first stage whose outputs are not stored."""
        return next((s for s in self.stages if s not in done), self.stages[-1])

    def progress(self, options: Options, stage: Stage, fraction: float) -> float:
        """The job's progress (0..1) when `stage` is `fraction` done."""
        weights = self.weigh(options)
        done_before = sum(weights[s] for s in self.stages[: self.stages.index(stage)])
        fraction = min(max(fraction, 0.0), 1.0)
        return round(min(done_before + weights[stage] * fraction, 1.0), 4)


def _subtitle_weights(options: Options) -> Weights:
    # Burning subtitles re-encodes every frame and costs about as much as transcribing; a soft
    # subtitle track is a quick remux.
    if options.burn_subtitles:
        return {Stage.TRANSCRIBE: 0.45, Stage.RENDER: 0.55}
    return {Stage.TRANSCRIBE: 0.9, Stage.RENDER: 0.1}


SUBTITLED = Pipeline((Stage.TRANSCRIBE, Stage.RENDER), _subtitle_weights, needs_picture=True)
TRANSCRIBED = Pipeline((Stage.TRANSCRIBE,), lambda _: {Stage.TRANSCRIBE: 1.0})
RENDERED = Pipeline((Stage.RENDER,), lambda _: {Stage.RENDER: 1.0})
# Composing costs what encoding the output does; transcribing the narration first is quick.
COMPOSED_TRANSCRIBED = Pipeline(
    (Stage.TRANSCRIBE, Stage.RENDER), lambda _: {Stage.TRANSCRIBE: 0.25, Stage.RENDER: 0.75}
)


# -- request bodies -----------------------------------------------------------------------------


def checked(parse: Callable[[object], T]) -> BeforeValidator:
    """A request field checked by an option's own parser, its message kept as it is."""

    def validate(value: object) -> T:
        try:
            return parse(value)
        except PermanentError as exc:
            raise PydanticCustomError(
                "invalid_request", "{message}", {"message": exc.message}
            ) from None

    return BeforeValidator(validate)


def documented(schema: dict[str, Any]) -> WithJsonSchema:
    """A field whose value its kind's intake checks (with the codes and paths it answers), shown
    in the OpenAPI document as `schema`."""
    return WithJsonSchema(schema)


Language = Annotated[
    str | None,
    checked(language_of),
    Field(description="spoken language (ISO 639-1), or 'auto'", examples=["en", "auto"]),
]
Formats = Annotated[tuple[Format, ...], checked(formats_of)]
ModelName = Annotated[
    str,
    checked(model_of),
    Field(description="the Whisper model's name (GET /v1/models); default: the deployment's"),
]
Task = Annotated[
    Literal["transcribe", "translate"],
    checked(task_of),
    Field(
        description="`translate`: the captions in English, whatever is spoken (a "
        "multilingual model only)"
    ),
]
Burn = Annotated[bool, checked(flag("burn_subtitles"))]
_WEBHOOK = {"type": "string", "format": "uri", "maxLength": 2048}


class JobRequest(BaseModel):
    """What every job request may hold besides its kind's own fields (and `kind` itself, which
    chooses the model)."""

    model_config = ConfigDict(extra="forbid")

    priority: Annotated[Priority, checked(parse_priority)] = Priority.NORMAL
    # Checked by the gateway, which knows whether private addresses are allowed.
    webhook_url: Annotated[Any, documented(_WEBHOOK)] = None


def _source_shape(value: object) -> object:
    if not isinstance(value, dict) or not isinstance(value.get("key"), str):
        raise invalid('source must be {"key": "<storage key>"}')
    return value


class StorageKey(BaseModel):
    # Its rules (the uploads prefix, no `..`) are the storage's, checked with their own code.
    key: str = Field(json_schema_extra={"minLength": 1, "maxLength": 512})


class Captioned(JobRequest, CaptionFields):
    """How the captions are laid out (in the burnt-in video, the subtitle track and the SRT,
    VTT and ASS files alike) and look (burnt in, and the ASS file): `compose.caption_style`,
    shared with a timeline's subtitles clips."""


class FromVideo(Captioned):
    """A job made from one uploaded video (or sound): POST /v1/uploads, then its key here; or
    the file itself in a multipart request."""

    source: Annotated[StorageKey, checked(_source_shape)]
    language: Language = "en"
    model: ModelName = ""
    task: Task = "transcribe"
    burn_subtitles: Burn = True
    formats: Formats = FORMATS
    speakers: Annotated[
        int | None, checked(speakers_of),
        WithJsonSchema({
            "anyOf": [{"type": "integer", "minimum": 0, "maximum": 8}, {"enum": ["auto"]},
                      {"type": "null"}],
            "description": "tell this many speakers apart (1 to 8), or 'auto' (also 0); absent "
                           "or null: don't",
        }),
    ] = None  # fmt: skip


_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}


class ComposeRequest(JobRequest):
    """A video rendered from a timeline: give `timeline`, or `template` and its `variables`.
    Each problem with them is answered at once, by path (422)."""

    timeline: Annotated[Any, documented({
        "type": "object", "description": "A timeline: see GET /v1/schemas/timeline.json.",
    })] = None  # fmt: skip
    template: Annotated[Any, documented(_NAME)] = None
    variables: Annotated[Any, documented({
        "type": "object",
        "additionalProperties": {"type": ["string", "number"], "maxLength": 1000},
    })] = None  # fmt: skip
    transcribe: Annotated[Any, documented({
        "type": ["boolean", "string"],
        "description": "true, or the name of the audio or video clip to transcribe",
    })] = None  # fmt: skip
    preview: Annotated[bool, checked(flag("preview"))] = False
    language: Language = "en"
    model: ModelName = ""
    task: Task = "transcribe"
    formats: Formats = FORMATS


# -- options ------------------------------------------------------------------------------------


_CLIP_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")  # a clip's name in a timeline


def _clip_name(value: object) -> str:
    if not isinstance(value, str) or not _CLIP_NAME.fullmatch(value or "x"):
        raise invalid("transcribe must name a clip of the timeline")
    return value


@dataclass(frozen=True, slots=True)
class ComposeOptions(Options):
    """A compose job's: its subtitles are part of its timeline, never burnt in separately."""

    burn_subtitles: bool = False
    transcribe: str = ""  # the clip whose sound is transcribed first (none: "")
    preview: bool = False  # a low-resolution proxy before the video

    PARSERS = {**Options.PARSERS, "transcribe": _clip_name, "preview": flag("preview")}


def _compose_pipeline(options: Options) -> Pipeline:
    transcribes = isinstance(options, ComposeOptions) and bool(options.transcribe)
    return COMPOSED_TRANSCRIBED if transcribes else RENDERED


# -- render: a finished job's video again, with a transcript its user corrected -----------------


def _captions_shape(value: object) -> object:
    if value is not None and (not isinstance(value, dict) or not isinstance(value.get("key"), str)):
        raise invalid('captions must be {"key": "<storage key>"}')
    return value


class RenderRequest(Captioned):
    """A finished job's video rendered again, without transcribing it again, with subtitles
    from its transcript as you corrected it: its JSON in `transcript`, or an uploaded JSON,
    SRT or WebVTT file in `captions`. Its outputs are the video and the corrected transcript
    (JSON, and SRT and VTT as `formats` asks)."""

    job: str = Field(description="A job of yours that completed, its source still stored.")
    transcript: Annotated[Any, documented({
        "type": "object",
        "description": "The corrected transcript, as a job's transcript JSON: `segments`, each "
        "with `start`, `end` (seconds) and `text`; a segment's `words` are kept only while "
        "they still say its text.",
    })] = None  # fmt: skip
    captions: Annotated[StorageKey | None, checked(_captions_shape)] = None
    language: Annotated[
        str | None,
        checked(language_of),
        Field(description="the subtitle track's language (default: the job's)"),
    ] = None
    burn_subtitles: Burn = True
    formats: Formats = FORMATS


def _text(name: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if not isinstance(value, str):
            raise invalid(f"{name} must be a string")
        return value

    return parse


@dataclass(frozen=True, slots=True)
class RenderOptions(Options):
    """A render job's: a subtitle job's, and the job whose source it renders again."""

    job: str = ""  # the job that owns the source (the one named, or the job it rendered again)

    PARSERS = {**Options.PARSERS, "job": _text("job")}


# -- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KindSpec:
    kind: Kind
    title: str  # a few words, for a menu (the page)
    summary: str  # what a job of the kind makes, for people (the page, the CLI, OpenAPI)
    request: type[JobRequest]  # its JSON body, as the gateway checks it
    options: type[Options]  # its options, as stored and shown
    pipeline: Callable[[Options], Pipeline]  # its stages, given its options
    handler: str  # the module that takes its requests in and runs its stages
    # Made from one video a client sends: a multipart request, `vidstream submit`, the page's
    # file picker.
    from_video: bool = False
    owns_source: bool = True  # its source is deleted with it (retention)


KINDS: Mapping[Kind, KindSpec] = {
    spec.kind: spec
    for spec in (
        KindSpec(
            Kind.SUBTITLE, "Subtitled video",
            "The video with subtitles (burnt in, or a track), and its transcript.",
            FromVideo, Options, lambda _: SUBTITLED, "vidstream.kinds.subtitle", from_video=True,
        ),
        KindSpec(
            Kind.TRANSCRIBE, "Transcript only",
            "The transcript of a video or a recording (JSON with words, SRT, VTT).",
            FromVideo, Options, lambda _: TRANSCRIBED, "vidstream.kinds.transcribe",
            from_video=True,
        ),
        KindSpec(
            Kind.COMPOSE, "Composed video",
            "A video rendered from a timeline of clips, pictures, text and sound (with "
            "subtitles of a transcribed clip, if asked).",
            ComposeRequest, ComposeOptions, _compose_pipeline, "vidstream.kinds.compose",
        ),
        KindSpec(
            Kind.RENDER, "Corrected subtitles",
            "A finished job's video rendered again with its transcript as you corrected it "
            "(JSON, SRT or WebVTT), without transcribing again.",
            # It reads the finished job's source, which that job keeps (and owns).
            RenderRequest, RenderOptions, lambda _: RENDERED, "vidstream.kinds.render",
            owns_source=False,
        ),
    )
}  # fmt: skip
