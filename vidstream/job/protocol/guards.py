"""What an operation requires of the job, beyond its status: one small check per requirement,
each refusing with its own outcome.

An operation lists its guards in the order they are checked (`ops`); the first that does not
pass is the answer, and nothing changes. `model.apply` runs them here; `job_transition.lua` runs the
same list, by name, with a function of that name for each (its `guard` table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vidstream.job.model import Stage
from vidstream.job.protocol.schema import JobView, Outcome


def out_of_attempts(attempt: int, max_attempts: int) -> bool:
    """Whether try number `attempt` of a stage is one too many. The one place this is decided:
    claims (`TriesLeft`) and the retry policy ask it; the Lua claim mirrors the comparison (the
    count is read inside the atomic step) and tests/test_protocol_model.py checks that the two
    agree."""
    return max_attempts > 0 and attempt > max_attempts


def next_try(job: JobView, stage: Stage) -> int:
    """The number a claim of `stage` gives its try: the next of the stage's, or 1 for another
    stage. A run handed back at a shutdown is no new try."""
    if job.handed_back:
        return job.attempts if job.stage == stage.value and job.attempts > 0 else 1
    return job.attempts + 1 if job.stage == stage.value else 1


@dataclass(frozen=True, slots=True)
class Guard:
    name: ClassVar[str]  # the function of `job_transition.lua`'s `guard` table that checks it
    outcome: ClassVar[Outcome]  # the answer when it does not pass

    def passes(self, job: JobView, now_ms: int) -> bool:
        raise NotImplementedError

    def attempts(self, job: JobView) -> int:
        """The try count a refusal reports."""
        return job.attempts


@dataclass(frozen=True, slots=True)
class Current(Guard):
    """A claim from a stream entry: the entry is of the job's last hand-off, not an older one
    (`gen` None: the claim comes from no entry)."""

    name = "current"
    outcome = Outcome.STALE
    gen: int | None

    def passes(self, job: JobView, now_ms: int) -> bool:
        return self.gen is None or self.gen == job.gen


@dataclass(frozen=True, slots=True)
class Unfinished(Guard):
    """The stage's outputs are not stored yet: a stage finishes once."""

    name = "unfinished"
    outcome = Outcome.DONE
    stage: Stage

    def passes(self, job: JobView, now_ms: int) -> bool:
        return self.stage.value not in job.done


@dataclass(frozen=True, slots=True)
class LeaseFree(Guard):
    """No other run holds a live lease on the job (a lapsed one is taken over)."""

    name = "lease_free"
    outcome = Outcome.BUSY
    owner: str

    def passes(self, job: JobView, now_ms: int) -> bool:
        return job.owner in ("", self.owner) or job.lease_until <= now_ms


@dataclass(frozen=True, slots=True)
class TriesLeft(Guard):
    """The try a claim would start is within `max_attempts` (0: no limit). Refused, it reports
    the tries made."""

    name = "tries_left"
    outcome = Outcome.EXHAUSTED
    stage: Stage
    max_attempts: int

    def passes(self, job: JobView, now_ms: int) -> bool:
        return not out_of_attempts(next_try(job, self.stage), self.max_attempts)

    def attempts(self, job: JobView) -> int:
        return next_try(job, self.stage) - 1


@dataclass(frozen=True, slots=True)
class AtStage(Guard):
    """The job is at `stage` (the one its run claimed)."""

    name = "at_stage"
    outcome = Outcome.REJECTED
    stage: Stage

    def passes(self, job: JobView, now_ms: int) -> bool:
        return job.stage == self.stage.value


@dataclass(frozen=True, slots=True)
class Holds(Guard):
    """The run `owner` holds the stage: any other was presumed dead and replaced. None: the
    operation comes from no run (a worker failing a job it could not claim)."""

    name = "holds"
    outcome = Outcome.LOST
    owner: str | None

    def passes(self, job: JobView, now_ms: int) -> bool:
        return self.owner is None or job.owner == self.owner


@dataclass(frozen=True, slots=True)
class Forward(Guard):
    """Progress moves the job forward, or carries an early output (stored whatever the
    progress)."""

    name = "forward"
    outcome = Outcome.UNCHANGED
    progress: float
    early_outputs: bool

    def passes(self, job: JobView, now_ms: int) -> bool:
        return self.early_outputs or self.progress > job.progress
