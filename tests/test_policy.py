"""The worker's policy, pure: what follows each claim outcome and each error, try by try."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from vidstream import policy
from vidstream.errors import (
    InvalidMedia,
    JobCancelled,
    ObjectNotFound,
    RunLost,
    StorageError,
    TooLong,
    TransientError,
)
from vidstream.jobs import ErrorInfo, Stage
from vidstream.protocol import Outcome

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


@pytest.mark.parametrize("attempts", [1, 2, 3])
@pytest.mark.parametrize(
    "exc", [InvalidMedia("no audio"), TooLong("5 hours"), ObjectNotFound("gone")]
)
def test_input_at_fault_fails_at_once(exc: Exception, attempts: int) -> None:
    """Bad input never retries: the job fails with the error's own code, whatever the try."""
    decision = policy.after_error(exc, RENDER, attempts, LIMITS)
    assert isinstance(decision, policy.FailJob)
    assert decision.error.code == exc.code  # type: ignore[attr-defined]


def test_a_storage_failure_retries() -> None:
    """Object storage timing out is the system's fault: the stage runs again later."""
    decision = policy.after_error(StorageError("timed out"), RENDER, 1, LIMITS)
    assert isinstance(decision, policy.RetryLater)
    assert decision.error.code == "storage_error"


def test_a_bug_retries_as_an_internal_error_without_details() -> None:
    """An unexpected exception is retried and shown as internal_error, never its text."""
    decision = policy.after_error(KeyError("secret path"), RENDER, 1, LIMITS)
    assert isinstance(decision, policy.RetryLater)
    assert decision.error.code == "internal_error"
    assert "secret" not in decision.error.message and "KeyError" in decision.error.message


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (JobCancelled("j"), policy.Stop),
        (RunLost("j"), policy.Leave),
        (RedisConnectionError("down"), policy.Leave),
    ],
)
def test_cancellation_and_lost_runs_record_nothing(exc: Exception, expected: type) -> None:
    """A cancelled job stops quietly; a run that lost its stage, or cannot reach Redis, leaves
    the entry to whoever holds it now (or to a reclaim)."""
    assert isinstance(policy.after_error(exc, RENDER, 1, LIMITS), expected)


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
