"""Which stages a job runs, in what order, and what each weighs: its kind's pipeline (declared
with the kind, in `kinds`), given its options.

The protocol and the Lua scripts read a job's next stage from here, as data: a kind never
changes them.
"""

from __future__ import annotations

from vidstream.job.kinds import KINDS, Kind, Pipeline, Weights
from vidstream.job.model import Job
from vidstream.job.options import Options


def pipeline(kind: Kind, options: Options | None = None) -> Pipeline:
    """The pipeline of a job of `kind` with `options` (its kind's defaults if None): a compose
    job that transcribes a clip first has a transcribe stage too."""
    spec = KINDS[kind]
    return spec.pipeline(spec.options() if options is None else options)


def pipeline_of(job: Job) -> Pipeline:
    return pipeline(job.kind, job.options)


__all__ = ["Pipeline", "Weights", "pipeline", "pipeline_of"]
