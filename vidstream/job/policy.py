"""What a worker does next, decided from an outcome or an error, the attempts and the settings.

Pure: the worker only carries the decision out. A claim that holds runs the stage; one that a
live run or a finished stage refuses is skipped; one beyond the attempts dead-letters the job.
After an error: input at fault fails the job; the system at fault retries with exponential
backoff and jitter until the stage is out of attempts (`guards.out_of_attempts`, the one place
that is decided), then dead-letters it.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import RedisError

from vidstream.core.errors import (
    CodedError,
    InvalidKey,
    JobCancelled,
    ObjectNotFound,
    ObjectTooLarge,
    PermanentError,
    RunLost,
    StorageError,
)
from vidstream.job.model import ErrorInfo, Stage
from vidstream.job.protocol import Outcome
from vidstream.job.protocol.guards import out_of_attempts


@dataclass(frozen=True, slots=True)
class Limits:
    """The retry settings (JOB_MAX_ATTEMPTS, RETRY_BASE_DELAY_S, RETRY_MAX_DELAY_S)."""

    max_attempts: int = 3
    base_delay_s: float = 5.0
    max_delay_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Proceed:
    """The claim holds: run the stage."""


@dataclass(frozen=True, slots=True)
class Skip:
    """Nothing to do for this entry: ack it."""

    reason: str


@dataclass(frozen=True, slots=True)
class Leave:
    """Leave the entry pending, unacked: a live run or a later reclaim deals with it."""

    reason: str


@dataclass(frozen=True, slots=True)
class RetryLater:
    error: ErrorInfo
    delay_s: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class FailJob:
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class Stop:
    """The job was cancelled while running: drop the work, write nothing more, ack."""


AfterClaim = Proceed | Skip | Leave | DeadLetter

# Errors that would repeat on every try: the input (or an object it names) is at fault.
PERMANENT = (PermanentError, ObjectNotFound, ObjectTooLarge, InvalidKey)
AfterError = RetryLater | DeadLetter | FailJob | Leave | Stop


def after_claim(outcome: Outcome, stage: Stage, attempts: int) -> AfterClaim:
    """What to do with an entry once its claim was answered."""
    match outcome:
        case Outcome.OK:
            return Proceed()
        case Outcome.BUSY:
            return Leave("a live run holds the job")  # kept until that run is done with it
        case Outcome.EXHAUSTED:
            return DeadLetter(
                ErrorInfo(
                    "too_many_attempts", f"The {stage} stage was interrupted {attempts} times."
                )
            )
        case Outcome.STALE:
            return Skip("superseded by a later hand-off")
    return Skip(outcome.value)


def retry_delay(attempt: int, limits: Limits, jitter: float) -> float:
    """Exponential backoff with jitter: base x 2^(attempt-1), capped, times `jitter` (0.5..1.5)."""
    return float(min(limits.base_delay_s * 2.0 ** max(attempt - 1, 0), limits.max_delay_s) * jitter)


# What a tenant sees of a storage failure: its message holds OS error text, paths or the
# storage endpoint's URL, which are the operator's business (the worker logs them).
STORAGE_FAILED = ErrorInfo("storage_error", "Object storage failed; the job can be retried.")


def describe(exc: BaseException, stage: Stage) -> ErrorInfo:
    """The error as the user sees it: a job error's code and message, else a generic one (the
    exception itself goes to the logs, not to the user)."""
    if isinstance(exc, StorageError) and not isinstance(exc, PERMANENT):
        return STORAGE_FAILED  # a missing, oversized or misnamed object says which, below
    if isinstance(exc, CodedError):
        return ErrorInfo(exc.code, exc.message)
    return ErrorInfo(
        "internal_error", f"An internal error stopped the {stage} stage ({type(exc).__name__})."
    )


def hidden(exc: BaseException, stage: Stage) -> str | None:
    """What a coded error said that the user does not see (`describe`): for the logs."""
    if isinstance(exc, CodedError) and describe(exc, stage).message != exc.message:
        return str(exc)
    return None


def after_error(
    exc: BaseException, stage: Stage, attempts: int, limits: Limits, jitter: float = 1.0
) -> AfterError:
    """What to do once try number `attempts` of `stage` raised `exc`."""
    if isinstance(exc, JobCancelled):
        return Stop()
    if isinstance(exc, RunLost):
        return Leave("another run holds the stage and its entry")
    if isinstance(exc, RedisError):
        return Leave("the outcome could not be recorded; the entry is reclaimed")
    error = describe(exc, stage)
    if isinstance(exc, PERMANENT):
        return FailJob(error)
    if out_of_attempts(attempts + 1, limits.max_attempts):
        return DeadLetter(error)
    return RetryLater(error, retry_delay(attempts, limits, jitter))
