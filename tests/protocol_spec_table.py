"""What each operation of the job protocol leads to, as a table written apart from the code:
the model check (`test_protocol_model.py`) holds the Lua and the reference model to it."""

from __future__ import annotations

from vidstream.job.model import Job, Stage
from vidstream.job.pipelines import pipeline_of
from vidstream.job.protocol import (
    Cancel,
    Claim,
    Fail,
    FinishStage,
    HandBack,
    Op,
    Progress,
    Replay,
    Retry,
)
from vidstream.job.protocol.model import Step

# What each operation leads to, written from the protocol's diagram (vidstream/job/protocol/
# __init__.py) and not from its code: the model and the Lua share the Python that computes the
# status and the hand-off, so only a table written apart can catch a mistake there. A row: the
# status after the operation, the event it records, and its hand-off: a kind, and the stage
# handed to (the operation's own, the one after it in the job's pipeline, or the pipeline's
# first stage not finished).
OWN, NEXT, FIRST_UNFINISHED = "own", "next", "first unfinished"
SPEC: dict[str, tuple[str, str | None, tuple[str, str | None] | None]] = {
    "claim": ("running", "started", None),
    "progress": ("running", "progress", None),
    "finish, not the last stage": ("running", "stage_completed", ("stage", NEXT)),
    "finish, the last stage": ("completed", "completed", None),
    "retry": ("running", "retrying", ("retry", OWN)),
    "fail": ("failed", "failed", None),
    "fail, dead letter": ("failed", "failed", ("dead", OWN)),
    "cancel": ("cancelled", "cancelled", ("notice", None)),
    "hand back": ("running", None, ("stage", OWN)),
    "replay": ("queued", "queued", ("stage", FIRST_UNFINISHED)),
}
Expected = tuple[str, str | None, tuple[str, str | None] | None]


def spec_row(op: Op, stages: list[str]) -> tuple[str, str | None]:
    """The spec's row for `op` and the stage it names (its own, or the one it dead-letters)."""
    match op:
        case Claim() | Progress():
            return op.name, op.stage.value
        case FinishStage():
            last = op.stage.value == stages[-1]
            return f"finish, {'the last' if last else 'not the last'} stage", op.stage.value
        case Retry():
            return "retry", op.stage.value
        case Fail(dead_letter=None):
            return "fail", None
        case Fail(dead_letter=Stage() as stage):
            return "fail, dead letter", stage.value
        case Cancel():
            return "cancel", None
        case HandBack():
            return "hand back", op.stage.value
        case Replay():
            return "replay", None


def expected(op: Op, job: dict[str, str]) -> Expected:
    """What the spec says `op` leads to when applied to the job hash `job`."""
    stages = [s.value for s in pipeline_of(Job.from_redis(job)).stages]
    status, event, push = SPEC[spec_row(op, stages)[0]]
    if push is None:
        return status, event, None
    kind, which = push
    own = spec_row(op, stages)[1]
    done = set(job.get("done", "").split(","))
    if which == NEXT:
        assert own is not None
        return status, event, (kind, stages[stages.index(own) + 1])
    if which == FIRST_UNFINISHED:
        return status, event, (kind, next((s for s in stages if s not in done), None))
    return status, event, (kind, own if which == OWN else None)


def led_to(step: Step) -> Expected:
    """Where an applied step led, in the spec's terms."""
    assert step.status is not None
    push = step.push
    return (
        step.status.value,
        step.event["event"] if step.event else None,
        None if push is None else (push.kind.value, push.stage.value if push.stage else None),
    )
