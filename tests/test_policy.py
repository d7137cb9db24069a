"""The worker's policy, pure: what follows each claim outcome and each error, try by try."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from vidstream.core.errors import (
    InvalidKey,
    InvalidMedia,
    JobCancelled,
    ObjectNotFound,
    ObjectTooLarge,
    RunLost,
    StorageError,
    TooLong,
    TransientError,
)
from vidstream.job import policy
from vidstream.job.model import ErrorInfo, Stage
from vidstream.job.protocol import Outcome

LIMITS = policy.Limits(max_attempts=3, base_delay_s=5.0, max_delay_s=300.0)
RENDER = Stage.RENDER


@pytest.mark.parametrize("attempts", [0, 1, 2, 3])
@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (Outcome.OK, policy.Proceed),
        (Outcome.BUSY, policy.Leave),
        (Outcome.EXHAUSTED, policy.DeadLetter),
        (Outcome.STALE, policy.Skip),
        (Outcome.DONE, policy.Skip),
        (Outcome.REJECTED, policy.Skip),
        (Outcome.MISSING, policy.Skip),
        (Outcome.LOST, policy.Skip),
        (Outcome.UNCHANGED, policy.Skip),
    ],
)
def test_every_claim_outcome_has_one_answer(
    outcome: Outcome, attempts: int, expected: type
) -> None:
    """A claim runs the stage, leaves a busy job's entry pending, skips what is done or
    superseded, and dead-letters a stage interrupted too often."""
    decision = policy.after_claim(outcome, RENDER, attempts)
    assert isinstance(decision, expected)
    if isinstance(decision, policy.DeadLetter):
        assert decision.error == ErrorInfo(
            "too_many_attempts", f"The render stage was interrupted {attempts} times."
        )


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        (1, policy.RetryLater),
        (2, policy.RetryLater),
        (3, policy.DeadLetter),
        (4, policy.DeadLetter),
    ],
)
def test_a_transient_error_retries_until_out_of_attempts(attempts: int, expected: type) -> None:
    """The system at fault: try again, until the last of JOB_MAX_ATTEMPTS tries failed."""
    exc = TransientError("FFmpeg crashed", code="ffmpeg_failed")
    decision = policy.after_error(exc, RENDER, attempts, LIMITS)
    assert isinstance(decision, expected)
    assert decision.error == ErrorInfo("ffmpeg_failed", "FFmpeg crashed")  # type: ignore[union-attr]


@pytest.mark.parametrize("attempts", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "exc",
    [InvalidMedia("no audio"), TooLong("5 hours"), ObjectNotFound("gone"),
     ObjectTooLarge("over 1000 bytes"), InvalidKey("bad key")],
)  # fmt: skip
def test_input_at_fault_fails_at_once(exc: Exception, attempts: int) -> None:
    """Bad input never retries: the job fails with the error's own code, whatever the try."""
    decision = policy.after_error(exc, RENDER, attempts, LIMITS)
    assert isinstance(decision, policy.FailJob)
    assert decision.error.code == exc.code  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [(1, policy.RetryLater), (2, policy.RetryLater), (3, policy.DeadLetter),
     (4, policy.DeadLetter)],
)  # fmt: skip
def test_a_storage_failure_retries(attempts: int, expected: type) -> None:
    """Object storage timing out is the system's fault: the stage runs again later, until the
    last try failed."""
    decision = policy.after_error(StorageError("timed out"), RENDER, attempts, LIMITS)
    assert isinstance(decision, expected)
    assert decision.error.code == "storage_error"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "exc",
    [
        StorageError("could not store jobs/x/a.srt: [Errno 28] No space left on device: '/srv/d'"),
        StorageError("object storage failed for uploads/x/source: Could not connect to the "
                     "endpoint URL: \"http://minio:9000/vidstream/uploads/x/source\""),
        StorageError("s3 at http://minio:9000 answered 500", code="storage_error"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("attempts", [1, 3])
def test_a_storage_failure_shows_no_internals(exc: StorageError, attempts: int) -> None:
    """A storage failure the tenant sees (retrying or dead-lettered) names no path, OS error or
    endpoint: a short generic message; its details are for the logs."""
    decision = policy.after_error(exc, RENDER, attempts, LIMITS)
    assert isinstance(decision, policy.RetryLater | policy.DeadLetter)
    assert decision.error == ErrorInfo(
        "storage_error", "Object storage failed; the job can be retried."
    )
    assert policy.hidden(exc, RENDER) == str(exc)  # what the worker logs instead


@pytest.mark.parametrize(
    "exc",
    [ObjectNotFound("uploads/x/source does not exist"), ObjectTooLarge("over 1000 bytes"),
     InvalidKey("a source key must start with 'uploads/'")],
)  # fmt: skip
def test_a_missing_or_oversized_object_keeps_its_own_message(exc: StorageError) -> None:
    """A storage error caused by the input says what is wrong with it, under its own code."""
    decision = policy.after_error(exc, RENDER, 1, LIMITS)
    assert isinstance(decision, policy.FailJob)
    assert decision.error == ErrorInfo(exc.code, exc.message)
    assert policy.hidden(exc, RENDER) is None


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [(1, policy.RetryLater), (3, policy.DeadLetter), (4, policy.DeadLetter)],
)
def test_a_bug_retries_as_an_internal_error_without_details(attempts: int, expected: type) -> None:
    """An unexpected exception is retried (until out of attempts) and shown as internal_error,
    never its text."""
    decision = policy.after_error(KeyError("secret path"), RENDER, attempts, LIMITS)
    assert isinstance(decision, expected)
    assert decision.error.code == "internal_error"  # type: ignore[union-attr]
    assert "secret" not in decision.error.message and "KeyError" in decision.error.message  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (JobCancelled("j"), policy.Stop),
        (RunLost("j"), policy.Leave),
        (RedisConnectionError("down"), policy.Leave),
    ],
)
@pytest.mark.parametrize("attempts", [1, 3, 4])
def test_cancellation_and_lost_runs_record_nothing(
    exc: Exception, expected: type, attempts: int
) -> None:
    """A cancelled job stops quietly; a run that lost its stage, or cannot reach Redis, leaves
    the entry to whoever holds it now (or to a reclaim), on the last try as on the first: none
    of them used up a try."""
    assert isinstance(policy.after_error(exc, RENDER, attempts, LIMITS), expected)


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [
        (1, 1.0, 5.0),
        (2, 1.0, 10.0),
        (3, 1.0, 20.0),
        (3, 0.5, 10.0),
        (10, 1.0, 300.0),
        (10, 1.5, 450.0),
    ],
)
def test_retry_delays_double_and_are_capped(attempt: int, jitter: float, expected: float) -> None:
    """Backoff doubles from RETRY_BASE_DELAY_S up to RETRY_MAX_DELAY_S, then jitters."""
    decision = policy.after_error(
        TransientError("x"), RENDER, attempt, policy.Limits(99, 5, 300), jitter
    )
    assert isinstance(decision, policy.RetryLater)
    assert decision.delay_s == pytest.approx(expected)
