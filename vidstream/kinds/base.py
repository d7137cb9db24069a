"""What a kind's handler module gives (`KindHandler`), and what the gateway and the stage
workers give it in return.

    KindHandler   its intake and its work for each stage of its pipeline
    Incoming      a request as the gateway received it: the clients, the tenant, the new job's id
    Draft         what the intake made of it: the job's source, options and the uploads it took
    Tools         a stage worker's clients and resources (FFmpeg, the encoder, Whisper)
    StageRun      one run of a stage, through which the work reports, stores and finishes

The gateway turns any `PermanentError` an intake raises into a 4xx answer with its code
(`too_large` 413, `not_found` 404, else 400), and `InvalidTimeline` into 422; a worker fails or
retries the job on the `JobError` a stage raises (`job.policy`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from vidstream.core.settings import Settings
from vidstream.job.model import Job, Output, Stage
from vidstream.job.options import Options
from vidstream.job.protocol import Intake
from vidstream.kinds.sources import Downloads
from vidstream.media import captions
from vidstream.media.cuts import Piece
from vidstream.media.ffmpeg import Bounds, Encoder
from vidstream.media.info import MediaInfo
from vidstream.media.models import ModelInfo, Task, catalogue, check
from vidstream.media.subtitles import Layout
from vidstream.media.transcript import Transcript
from vidstream.media.whispers import Whispers
from vidstream.services import Services


@dataclass(frozen=True, slots=True)
class Upload:
    """The file a multipart request carried, already stored under `key` with its ticket."""

    key: str
    filename: str


@dataclass(frozen=True, slots=True)
class Incoming:
    """A job request as the gateway received it, before the job exists."""

    services: Services
    tenant: str
    job_id: str  # the job's id, chosen before it is created (uploads are taken for it)
    # Raises the gateway's `paused` answer when new jobs are paused: an intake that takes
    # uploads calls it first, so a refused request takes nothing.
    refuse_if_paused: Callable[[], Awaitable[None]]
    upload: Upload | None = None


@dataclass(frozen=True, slots=True)
class Draft:
    """The job an intake made of a request, ready to be created."""

    source_key: str  # "" when the job has no source of its own
    options: Options
    source_name: str = ""
    timeline: str = ""  # compose: the timeline, JSON with every default filled in
    assets: tuple[str, ...] = ()  # uploads taken for the job: deleted with it
    # A source named by key, as the storage check found it; the job is created and the upload's
    # ticket taken in one step (`JobStore.create_from_upload`). None: nothing left to take.
    found: Intake | None = None


@dataclass(frozen=True, slots=True)
class Tools:
    """What a stage worker holds for the work it runs."""

    services: Services
    ffmpeg: str  # the FFmpeg binary
    encoder: Encoder
    bounds: Bounds  # whatever a source's header says: no larger picture, no longer video
    concurrency: int = 1  # jobs the worker runs at once
    whisper: Whispers | None = None  # the transcribe stage's, a pool per model
    downloads: Downloads | None = None  # sources downloaded once for the worker's runs


class Stored(Protocol):
    async def put(self, key: str, path: Path, content_type: str) -> Output:
        """Store the file at `path` under `key` (a name of the run's own), owned by the job."""
        ...


class StageRun(Protocol):
    """One run of a stage for one job (`actors.run.Run`)."""

    @property
    def log(self) -> structlog.stdlib.BoundLogger: ...

    @property
    def tag(self) -> str:
        """The run's own short name, in the names of the objects it stores."""
        ...

    @property
    def objects(self) -> Stored | None: ...

    @property
    def owner(self) -> str:
        """The run's lease token (a fanned-out stage's pieces are leased to it too)."""
        ...

    async def report(
        self, fraction: float, *, force: bool = False, pieces: tuple[int, int] | None = None
    ) -> None:
        """How far the stage is (`pieces`: a fanned-out stage's, done and in all); raises
        `JobCancelled` once the job no longer runs it."""
        ...

    async def publish(self, fraction: float, outputs: dict[str, Output]) -> None:
        """Outputs the stage made before its end (a compose job's preview)."""
        ...

    async def finish(self, outputs: dict[str, Output], media: MediaInfo | None = None) -> None:
        """The stage stored `outputs`: hand the job on to its next stage, or complete it."""
        ...


StageWork = Callable[[Tools, Job, Path, StageRun], Awaitable[None]]
"""Run a stage for a job, writing scratch files under the directory given only, and end with
`run.finish(outputs)`."""


Report = Callable[[float], Awaitable[None]]  # how far a piece of work is, 0..1


@dataclass(frozen=True, slots=True)
class PieceRun:
    """One try of one piece of a fanned-out stage (`fanout`), as its work sees it."""

    piece: Piece
    workdir: Path  # scratch files here only
    report: Report
    log: structlog.stdlib.BoundLogger
    tag: str  # the try's own short name, in the names of the objects it stores
    context: Mapping[str, Any]  # what the stage's run decided for every piece (`fanout`)


class PieceWork(Protocol):
    """Work one piece of a job's stage, on any worker of the stage; return its result (a
    transcript as JSON, a stored segment's key) for the stage's run to join."""

    async def __call__(self, tools: Tools, job: Job, run: PieceRun) -> str: ...


@dataclass(frozen=True, slots=True)
class KindHandler:
    """A kind's code: what its handler module (`KindSpec.handler`) exports as `HANDLER`."""

    # Check a request (the kind's validated `request` model) before anything is queued, take
    # what it names for the job, and say what the job is.
    intake: Callable[[Incoming, Any], Awaitable[Draft]]
    stages: Mapping[Stage, StageWork]  # the work of each stage of its pipeline
    # The work of one piece, for each stage that fans a long source out (`fanout`).
    pieces: Mapping[Stage, PieceWork] = field(default_factory=dict)


def layout_of(options: Options) -> Layout:
    """How a job's options lay its captions out (`media.subtitles`)."""
    return options.captions.layout()


def burnt_captions(
    options: Options, transcript: Transcript | list[captions.Timed], width: int, height: int,
    window: tuple[float, float] | None = None,
) -> str:  # fmt: skip
    """The ASS document of a job's captions for a `width` x `height` picture, in the layout and
    look its options chose (of a transcript, or of its cues laid out already); with `window`
    (start, end), only the cues seen in it, timed from its start (a fanned-out burn's segment)."""
    items = transcript
    if isinstance(items, Transcript):
        items = captions.word_cues(items, options.captions.layout())
    if window is not None:
        items = captions.shift(items, 0.0, *window)
    look = options.captions.look()
    return captions.to_ass_styled(items, width, height, look, karaoke=options.captions.karaoke)


def speech_model(settings: Settings, options: Options) -> ModelInfo:
    """The Whisper model a job's options choose, refused (400) when the deployment does not
    offer it or it cannot do the language or task asked, naming it."""
    model = catalogue(settings.whisper_model, settings.whisper_models_dir).get(options.model)
    check(model, options.language, Task(options.task))
    return model
