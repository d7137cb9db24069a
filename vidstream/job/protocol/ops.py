"""The named operations on a job, one class each, and their encoding for `job_transition.lua`.

A class declares all of its operation: the statuses it applies in (`allowed_from`), what else it
requires of the job (`guards`, checked in order), what it writes of its own (`change`), whether
the run keeps the stage (`keeps_stage`), the status it leads to (`target`), the hand-off it makes
in the same step (`push`) and the event it records (`event`, `data`). `model.apply` reads these
to give the reference semantics; `job_transition.lua` applies an operation atomically in Redis from
its encoding (`encode`: the same declarations, and the operation's fields), with one function per
operation for what it writes. Every operation has a transaction id, so a resend after a lost
reply changes nothing.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vidstream.job.kinds import DEFAULT
from vidstream.job.model import ACTIVE, ErrorInfo, Job, Output, Stage, Status
from vidstream.job.pipelines import pipeline_of
from vidstream.job.protocol.guards import (
    AtStage,
    Current,
    Forward,
    Guard,
    Holds,
    LeaseFree,
    TriesLeft,
    Unfinished,
    next_try,
)
from vidstream.job.protocol.schema import EventName, Field, JobView, PushKind
from vidstream.media.info import MediaInfo

RUNNING = frozenset({Status.RUNNING})
FAILED = frozenset({Status.FAILED})


def _tx() -> str:
    return secrets.token_hex(8)


def _clamp(fraction: float) -> float:
    return round(min(max(fraction, 0.0), 1.0), 4)


def _outputs(outputs: dict[str, Output]) -> dict[str, Any]:
    return {k: v.to_dict() for k, v in outputs.items()}


@dataclass(frozen=True, slots=True)
class Push:
    """The hand-off an operation makes in the same atomic step."""

    kind: PushKind
    stage: Stage | None = None  # the stage handed to (none for a cancel notice)
    delay_ms: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    """What an operation writes of its own: the job's stage, try count and progress after it,
    and other fields. Every applied operation also writes the status, the time, the generation
    and its transaction id; one that does not keep the stage also frees it (owner, lease)."""

    stage: str
    attempts: int
    progress: float
    fields: dict[Field, str] = field(default_factory=dict)
    deletes: tuple[Field, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    """What every operation declares; the defaults are an operation's that requires nothing
    but its status, writes nothing of its own and hands nothing on."""

    name: ClassVar[str]  # also the function of `job_transition.lua`'s `op` table that applies it
    allowed_from: ClassVar[frozenset[Status]]
    keeps_stage: ClassVar[bool] = False  # the run holding the stage keeps it (a claim takes it)
    tx: str = field(default_factory=_tx)

    def guards(self) -> tuple[Guard, ...]:
        return ()

    def change(self, job: JobView, now_ms: int) -> Change:
        return Change(job.stage, job.attempts, job.progress)

    def target(self) -> Status:
        return Status.RUNNING

    def push(self) -> Push | None:
        return None

    def data(self) -> dict[str, Any]:
        """The payload of its event beyond status, stage and progress."""
        return {}

    def args(self) -> dict[str, Any]:
        """Its fields as `job_transition.lua` reads them."""
        return {}


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim(Operation):
    """A worker takes `stage` for the run `owner` (from an entry of generation `gen`) and starts
    a try of it: refused while another live run holds the job, for a finished stage, for an
    entry older than the last hand-off, and beyond `max_attempts` tries."""

    name = "claim"
    event: ClassVar[EventName | None] = EventName.STARTED
    allowed_from = ACTIVE
    keeps_stage = True
    stage: Stage
    owner: str
    lease_ms: int
    max_attempts: int
    progress: float  # the job's progress as the stage begins; never moves the job back
    gen: int | None = None

    @classmethod
    def of(
        cls, job: Job, stage: Stage, *, owner: str, lease_ms: int, max_attempts: int,
        gen: int | None = None,
    ) -> Claim:  # fmt: skip
        start = pipeline_of(job).progress(job.options, stage, 0.0)
        return cls(stage=stage, owner=owner, lease_ms=lease_ms, max_attempts=max_attempts,
                   progress=start, gen=gen)  # fmt: skip

    def guards(self) -> tuple[Guard, ...]:
        return (Current(self.gen), Unfinished(self.stage), LeaseFree(self.owner),
                TriesLeft(self.stage, self.max_attempts))  # fmt: skip

    def change(self, job: JobView, now_ms: int) -> Change:
        lease = {Field.OWNER: self.owner, Field.LEASE_UNTIL: str(now_ms + self.lease_ms)}
        return Change(self.stage.value, next_try(job, self.stage),
                      max(job.progress, self.progress), lease, (Field.HANDED_BACK,))  # fmt: skip

    def args(self) -> dict[str, Any]:
        return {"stage": self.stage.value, "owner": self.owner, "lease_ms": self.lease_ms,
                "max_attempts": self.max_attempts, "progress": self.progress,
                "gen": -1 if self.gen is None else self.gen}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress(Operation):
    """The run holding `stage` reports how far it is; only forward movement is recorded."""

    name = "progress"
    event: ClassVar[EventName | None] = EventName.PROGRESS
    allowed_from = RUNNING
    keeps_stage = True
    stage: Stage
    owner: str
    progress: float
    stage_progress: float
    eta_s: float | None = None  # seconds until the job ends, once it can be estimated
    outputs: dict[str, Output] = field(default_factory=dict)  # stored early (a preview)
    pieces: tuple[int, int] | None = None  # a fanned-out stage: (pieces done, pieces in all)

    @classmethod
    def of(
        cls, job: Job, stage: Stage, fraction: float, *, owner: str, eta_s: float | None = None,
        outputs: dict[str, Output] | None = None, pieces: tuple[int, int] | None = None,
    ) -> Progress:  # fmt: skip
        overall = pipeline_of(job).progress(job.options, stage, fraction)
        return cls(stage=stage, owner=owner, progress=overall, stage_progress=_clamp(fraction),
                   eta_s=None if eta_s is None else round(max(eta_s, 0.0), 1),
                   outputs=dict(outputs or {}), pieces=pieces)  # fmt: skip

    def guards(self) -> tuple[Guard, ...]:
        return AtStage(self.stage), Holds(self.owner), Forward(self.progress, bool(self.outputs))

    def change(self, job: JobView, now_ms: int) -> Change:
        # A stage's early output (a preview) is stored whatever the progress.
        early = {Field.OUTPUTS: job.merged_outputs(_outputs(self.outputs))} if self.outputs else {}
        return Change(job.stage, job.attempts, max(job.progress, self.progress), early)

    def data(self) -> dict[str, Any]:
        eta = {} if self.eta_s is None else {"eta_s": self.eta_s}
        early = {"outputs": sorted(self.outputs)} if self.outputs else {}
        cut = {} if self.pieces is None else {"pieces": {"done": self.pieces[0],
                                                          "total": self.pieces[1]}}  # fmt: skip
        return {"stage_progress": self.stage_progress, **eta, **early, **cut}

    def args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"stage": self.stage.value, "owner": self.owner,
                                "progress": self.progress}  # fmt: skip
        if self.outputs:  # absent rather than empty: Lua's cjson makes {} and [] alike
            args["outputs"] = _outputs(self.outputs)
        return args


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishStage(Operation):
    """The run holding `stage` stored its outputs: the job goes on to `next_stage` in the same
    step, or completes when the pipeline ends here. A stage finishes once."""

    name = "finish"
    allowed_from = RUNNING
    stage: Stage
    owner: str
    outputs: dict[str, Output]
    next_stage: Stage | None
    progress: float
    media: MediaInfo | None = None

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

    def guards(self) -> tuple[Guard, ...]:
        return AtStage(self.stage), Holds(self.owner), Unfinished(self.stage)

    def change(self, job: JobView, now_ms: int) -> Change:
        writes = {Field.OUTPUTS: job.merged_outputs(_outputs(self.outputs)),
                  Field.DONE: ",".join([*job.done, job.stage])}  # fmt: skip
        if self.media is not None:
            writes[Field.MEDIA] = json.dumps(self.media.to_dict())
        stage = "" if self.next_stage is None else job.stage  # completed: at no stage
        return Change(stage, job.attempts, max(job.progress, self.progress), writes)

    def target(self) -> Status:
        return Status.RUNNING if self.next_stage else Status.COMPLETED

    def push(self) -> Push | None:
        return Push(PushKind.STAGE, self.next_stage) if self.next_stage else None

    def data(self) -> dict[str, Any]:
        return {"outputs": sorted(self.outputs)}

    def args(self) -> dict[str, Any]:
        return {"stage": self.stage.value, "owner": self.owner, "progress": self.progress,
                "outputs": _outputs(self.outputs),
                "media": json.dumps(self.media.to_dict()) if self.media else ""}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry(Operation):
    """The run failed for a transient reason: it lets the stage go, and the stage runs again
    after `delay_s` (timed by Redis, which holds the delayed entry)."""

    name = "retry"
    event: ClassVar[EventName | None] = EventName.RETRYING
    allowed_from = RUNNING
    stage: Stage
    owner: str
    error: ErrorInfo
    attempt: int
    delay_s: float

    def guards(self) -> tuple[Guard, ...]:
        return (Holds(self.owner),)

    def change(self, job: JobView, now_ms: int) -> Change:
        return Change(job.stage, job.attempts, job.progress, {Field.ERROR: _error(self.error)})

    def push(self) -> Push | None:
        return Push(PushKind.RETRY, self.stage, delay_ms=int(self.delay_s * 1000))

    def data(self) -> dict[str, Any]:
        return {"error": self.error.to_dict(), "attempt": self.attempt,
                "retry_in_s": round(self.delay_s, 3)}  # fmt: skip

    def args(self) -> dict[str, Any]:
        return {"stage": self.stage.value, "owner": self.owner, "error": _error(self.error)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Fail(Operation):
    """The job fails; with `dead_letter`, it also goes on the dead-letter stream. With `owner`,
    only the run holding the stage may fail it."""

    name = "fail"
    event: ClassVar[EventName | None] = EventName.FAILED
    allowed_from = ACTIVE
    error: ErrorInfo
    owner: str | None = None
    dead_letter: Stage | None = None

    def guards(self) -> tuple[Guard, ...]:
        return (Holds(self.owner),)

    def change(self, job: JobView, now_ms: int) -> Change:
        return Change(job.stage, job.attempts, job.progress, {Field.ERROR: _error(self.error)})

    def target(self) -> Status:
        return Status.FAILED

    def push(self) -> Push | None:
        return Push(PushKind.DEAD, self.dead_letter) if self.dead_letter else None

    def data(self) -> dict[str, Any]:
        return {
            "error": self.error.to_dict(),
            **({"dead_letter": True} if self.dead_letter else {}),
        }

    def args(self) -> dict[str, Any]:
        owner = {} if self.owner is None else {"owner": self.owner}  # absent: from no run
        return {**owner, "error": _error(self.error), "code": self.error.code,
                "message": self.error.message}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel(Operation):
    """A user cancels a queued or running job. A notice on the control stream, written in the
    same step, tells a worker running it to stop now rather than at its next report."""

    name = "cancel"
    event: ClassVar[EventName | None] = EventName.CANCELLED
    allowed_from = ACTIVE

    def target(self) -> Status:
        return Status.CANCELLED

    def push(self) -> Push | None:
        return Push(PushKind.NOTICE)


@dataclass(frozen=True, slots=True, kw_only=True)
class HandBack(Operation):
    """A worker stopping gives its run up: the stage is free at once and a new entry lets
    another worker take it up; that next try is not counted. Clients see no event."""

    name = "handback"
    event: ClassVar[EventName | None] = None
    allowed_from = RUNNING
    stage: Stage
    owner: str

    def guards(self) -> tuple[Guard, ...]:
        return (Holds(self.owner),)

    def change(self, job: JobView, now_ms: int) -> Change:
        return Change(job.stage, job.attempts, job.progress, {Field.HANDED_BACK: "1"})

    def push(self) -> Push | None:
        return Push(PushKind.STAGE, self.stage)

    def args(self) -> dict[str, Any]:
        return {"stage": self.stage.value, "owner": self.owner}


@dataclass(frozen=True, slots=True, kw_only=True)
class Replay(Operation):
    """A failed job runs again (`POST /v1/jobs/{id}/retry`): a new run starts at `queued` and
    is handed to `first_stage`, keeping what finished stages stored."""

    name = "replay"
    event: ClassVar[EventName | None] = EventName.QUEUED
    allowed_from = FAILED
    first_stage: Stage

    @classmethod
    def of(cls, job: Job) -> Replay:
        return cls(first_stage=pipeline_of(job).first_unfinished(job.done))

    def change(self, job: JobView, now_ms: int) -> Change:
        return Change("", 0, job.progress, {Field.ERROR: ""})  # a new run: no stage, no try yet

    def target(self) -> Status:
        return Status.QUEUED

    def push(self) -> Push | None:
        return Push(PushKind.STAGE, self.first_stage)

    def data(self) -> dict[str, Any]:
        return {"replay": True}


Op = Claim | Progress | FinishStage | Retry | Fail | Cancel | HandBack | Replay


def _error(error: ErrorInfo) -> str:
    return json.dumps(error.to_dict())


def encode(op: Op, now: float) -> dict[str, Any]:
    """The argument of `job_transition.lua` for `op`: its declarations, then its own fields (see
    the script's header for how each is read)."""
    data = op.data()
    args: dict[str, Any] = {
        "op": op.name,
        "tx": op.tx,
        "now": repr(now),
        "event": op.event.value if op.event else "",
        "data": json.dumps(data) if data else "",
        "status": op.target().value,
        "from": {s.value: True for s in op.allowed_from},
        "guards": [[g.name, g.outcome.value] for g in op.guards()],
        "keeps_stage": op.keeps_stage,
        "default_kind": DEFAULT.value,  # a job written before kinds existed is one of these
        **op.args(),
    }
    if (push := op.push()) is not None:  # absent rather than null: cjson decodes null as true
        args["push"] = {"kind": push.kind.value, "stage": push.stage or "",
                        "delay_ms": push.delay_ms}  # fmt: skip
    return args
