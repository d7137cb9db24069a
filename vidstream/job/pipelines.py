"""Job kinds as declared pipelines: which stages a job runs, in what order, and what each weighs.

A new kind is one entry in `PIPELINES` plus the actor of any stage it adds; the worker and the
Lua scripts read everything else from here. The gateway changes only when the kind takes a
different request body (compose takes a timeline).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from vidstream.job.model import Job, Kind, Options, Stage

Weights = Mapping[Stage, float]


@dataclass(frozen=True, slots=True)
class Pipeline:
    kind: Kind
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


# Composing costs what encoding the output does; transcribing the narration first is quick.
COMPOSE_TRANSCRIBED = Pipeline(
    Kind.COMPOSE, (Stage.TRANSCRIBE, Stage.RENDER),
    lambda _: {Stage.TRANSCRIBE: 0.25, Stage.RENDER: 0.75},
)  # fmt: skip

PIPELINES: Mapping[Kind, Pipeline] = {
    Kind.SUBTITLE: Pipeline(
        Kind.SUBTITLE, (Stage.TRANSCRIBE, Stage.RENDER), _subtitle_weights, needs_picture=True
    ),
    Kind.TRANSCRIBE: Pipeline(
        Kind.TRANSCRIBE, (Stage.TRANSCRIBE,), lambda _: {Stage.TRANSCRIBE: 1.0}
    ),
    Kind.COMPOSE: Pipeline(Kind.COMPOSE, (Stage.RENDER,), lambda _: {Stage.RENDER: 1.0}),
}


def pipeline(kind: Kind, options: Options | None = None) -> Pipeline:
    """The pipeline of a job of `kind` with `options`: a compose job that transcribes a clip
    first has a transcribe stage too."""
    if kind is Kind.COMPOSE and options is not None and options.transcribe:
        return COMPOSE_TRANSCRIBED
    return PIPELINES[kind]


def pipeline_of(job: Job) -> Pipeline:
    return pipeline(job.kind, job.options)
