"""The named operations on a job, and their encoding for the Lua script that applies them.

Each operation carries what the pure side decided (the progress it reports, the stage a finished
one hands on to, the error and delay of a retry); `protocol.model.apply` defines what it requires
of the job and what it changes, and `lua.TRANSITION` does the same atomically in Redis. Every
operation has a transaction id, so a resend after a lost reply changes nothing.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vidstream.job.model import ACTIVE, ErrorInfo, Job, Output, Stage, Status
from vidstream.job.pipelines import pipeline_of
from vidstream.job.protocol.schema import EventName, PushKind
from vidstream.media.info import MediaInfo

RUNNING = frozenset({Status.RUNNING})
FAILED = frozenset({Status.FAILED})


def _tx() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class Push:
    """The hand-off an operation makes in the same atomic step."""

    kind: PushKind
    stage: Stage | None = None  # the stage handed to (none for a cancel notice)
    delay_ms: int = 0


def _clamp(fraction: float) -> float:
    return round(min(max(fraction, 0.0), 1.0), 4)


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A worker takes `stage` for the run `owner` (from an entry of generation `gen`) and starts
    a try of it: refused while another live run holds the job, for a finished stage, for an
    entry older than the last hand-off, and beyond `max_attempts` tries."""

    name: ClassVar[str] = "claim"
    event: ClassVar[EventName | None] = EventName.STARTED
    allowed_from: ClassVar[frozenset[Status]] = ACTIVE
    stage: Stage
    owner: str
    lease_ms: int
    max_attempts: int
    progress: float  # the job's progress as the stage begins; never moves the job back
    gen: int | None = None
    tx: str = field(default_factory=_tx)

    @classmethod
    def of(
        cls, job: Job, stage: Stage, *, owner: str, lease_ms: int, max_attempts: int,
        gen: int | None = None,
    ) -> Claim:  # fmt: skip
        start = pipeline_of(job).progress(job.options, stage, 0.0)
        return cls(stage=stage, owner=owner, lease_ms=lease_ms, max_attempts=max_attempts,
                   progress=start, gen=gen)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """The run holding `stage` reports how far it is; only forward movement is recorded."""

    name: ClassVar[str] = "progress"
    event: ClassVar[EventName | None] = EventName.PROGRESS
    allowed_from: ClassVar[frozenset[Status]] = RUNNING
    stage: Stage
    owner: str
    progress: float
    stage_progress: float
    eta_s: float | None = None  # seconds until the job ends, once it can be estimated
    outputs: dict[str, Output] = field(default_factory=dict)  # stored early (a preview)
    tx: str = field(default_factory=_tx)

    @classmethod
    def of(
        cls, job: Job, stage: Stage, fraction: float, *, owner: str, eta_s: float | None = None,
        outputs: dict[str, Output] | None = None,
    ) -> Progress:  # fmt: skip
        overall = pipeline_of(job).progress(job.options, stage, fraction)
        return cls(stage=stage, owner=owner, progress=overall, stage_progress=_clamp(fraction),
                   eta_s=None if eta_s is None else round(max(eta_s, 0.0), 1),
                   outputs=dict(outputs or {}))  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishStage:
    """The run holding `stage` stored its outputs: the job goes on to `next_stage` in the same
    step, or completes when the pipeline ends here. A stage finishes once."""

    name: ClassVar[str] = "finish"
    allowed_from: ClassVar[frozenset[Status]] = RUNNING
    stage: Stage
    owner: str
    outputs: dict[str, Output]
    next_stage: Stage | None
    progress: float
    media: MediaInfo | None = None
    tx: str = field(default_factory=_tx)

    @property
    def event(self) -> EventName:
        return EventName.STAGE_COMPLETED if self.next_stage else EventName.COMPLETED

    @classmethod
    def of(
        cls, job: Job, stage: Stage, outputs: dict[str, Output], *, owner: str,
        media: MediaInfo | None = None,
    ) -> FinishStage:  # fmt: skip
        flow = pipeline_of(job)
        return cls(stage=stage, owner=owner, outputs=outputs, next_stage=flow.next_stage(stage),
                   progress=flow.progress(job.options, stage, 1.0), media=media)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """The run failed for a transient reason: it lets the stage go, and the stage runs again
    after `delay_s` (timed by Redis, which holds the delayed entry)."""

    name: ClassVar[str] = "retry"
    event: ClassVar[EventName | None] = EventName.RETRYING
    allowed_from: ClassVar[frozenset[Status]] = RUNNING
    stage: Stage
    owner: str
    error: ErrorInfo
    attempt: int
    delay_s: float
    tx: str = field(default_factory=_tx)


@dataclass(frozen=True, slots=True, kw_only=True)
class Fail:
    """The job fails; with `dead_letter`, it also goes on the dead-letter stream. With `owner`,
    only the run holding the stage may fail it."""

    name: ClassVar[str] = "fail"
    event: ClassVar[EventName | None] = EventName.FAILED
    allowed_from: ClassVar[frozenset[Status]] = ACTIVE
    error: ErrorInfo
    owner: str | None = None
    dead_letter: Stage | None = None
    tx: str = field(default_factory=_tx)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    """A user cancels a queued or running job. A notice on the control stream, written in the
    same step, tells a worker running it to stop now rather than at its next report."""

    name: ClassVar[str] = "cancel"
    event: ClassVar[EventName | None] = EventName.CANCELLED
    allowed_from: ClassVar[frozenset[Status]] = ACTIVE
    tx: str = field(default_factory=_tx)


@dataclass(frozen=True, slots=True, kw_only=True)
class HandBack:
    """A worker stopping gives its run up: the stage is free at once and a new entry lets
    another worker take it up; that next try is not counted. Clients see no event."""

    name: ClassVar[str] = "handback"
    event: ClassVar[EventName | None] = None
    allowed_from: ClassVar[frozenset[Status]] = RUNNING
    stage: Stage
    owner: str
    tx: str = field(default_factory=_tx)


@dataclass(frozen=True, slots=True, kw_only=True)
class Replay:
    """A failed job runs again (`POST /v1/jobs/{id}/retry`): a new run starts at `queued` and
    is handed to `first_stage`, keeping what finished stages stored."""

    name: ClassVar[str] = "replay"
    event: ClassVar[EventName | None] = EventName.QUEUED
    allowed_from: ClassVar[frozenset[Status]] = FAILED
    first_stage: Stage
    tx: str = field(default_factory=_tx)

    @classmethod
    def of(cls, job: Job) -> Replay:
        return cls(first_stage=pipeline_of(job).first_unfinished(job.done))


Op = Claim | Progress | FinishStage | Retry | Fail | Cancel | HandBack | Replay


def push_of(op: Op) -> Push | None:
    """The hand-off `op` makes when it applies."""
    match op:
        case FinishStage(next_stage=Stage() as after):
            return Push(PushKind.STAGE, after)
        case Retry():
            return Push(PushKind.RETRY, op.stage, delay_ms=int(op.delay_s * 1000))
        case Fail(dead_letter=Stage() as stage):
            return Push(PushKind.DEAD, stage)
        case HandBack():
            return Push(PushKind.STAGE, op.stage)
        case Replay():
            return Push(PushKind.STAGE, op.first_stage)
        case Cancel():
            return Push(PushKind.NOTICE)
    return None


def event_data(op: Op) -> dict[str, Any]:
    """The payload the op's event carries beyond status, stage and progress."""
    match op:
        case Progress():
            eta = {} if op.eta_s is None else {"eta_s": op.eta_s}
            early = {"outputs": sorted(op.outputs)} if op.outputs else {}
            return {"stage_progress": op.stage_progress, **eta, **early}
        case FinishStage():
            return {"outputs": sorted(op.outputs)}
        case Retry():
            return {"error": op.error.to_dict(), "attempt": op.attempt,
                    "retry_in_s": round(op.delay_s, 3)}  # fmt: skip
        case Fail():
            return {
                "error": op.error.to_dict(),
                **({"dead_letter": True} if op.dead_letter else {}),
            }
        case Replay():
            return {"replay": True}
    return {}


def target_status(op: Op) -> Status:
    match op:
        case FinishStage(next_stage=None):
            return Status.COMPLETED
        case Fail():
            return Status.FAILED
        case Cancel():
            return Status.CANCELLED
        case Replay():
            return Status.QUEUED
    return Status.RUNNING


def encode(op: Op, now: float) -> dict[str, Any]:
    """The argument of `lua.TRANSITION` for `op` (see the script for how each is read)."""
    push = push_of(op)
    data = event_data(op)
    args: dict[str, Any] = {
        "op": op.name,
        "tx": op.tx,
        "now": repr(now),
        "event": op.event.value if op.event else "",
        "data": json.dumps(data) if data else "",
        "status": target_status(op).value,
        "from": {s.value: True for s in op.allowed_from},
    }
    if push is not None:  # absent rather than null: Lua's cjson decodes null as a true value
        args["push"] = {"kind": push.kind.value, "stage": push.stage or "",
                        "delay_ms": push.delay_ms}  # fmt: skip
    match op:
        case Claim():
            args.update(stage=op.stage.value, owner=op.owner, lease_ms=op.lease_ms,
                        max_attempts=op.max_attempts, progress=op.progress,
                        gen=-1 if op.gen is None else op.gen)  # fmt: skip
        case Progress():
            args.update(stage=op.stage.value, owner=op.owner, progress=op.progress)
            if op.outputs:  # absent rather than empty: Lua's cjson makes {} and [] alike
                args["outputs"] = {k: v.to_dict() for k, v in op.outputs.items()}
        case FinishStage():
            args.update(stage=op.stage.value, owner=op.owner, progress=op.progress,
                        outputs={k: v.to_dict() for k, v in op.outputs.items()},
                        media=json.dumps(op.media.to_dict()) if op.media else "")  # fmt: skip
        case Retry():
            args.update(stage=op.stage.value, owner=op.owner, error=json.dumps(op.error.to_dict()))
        case Fail():
            args.update(owner=op.owner or "", error=json.dumps(op.error.to_dict()),
                        code=op.error.code, message=op.error.message)  # fmt: skip
        case HandBack():
            args.update(stage=op.stage.value, owner=op.owner)
    return args
