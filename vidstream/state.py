"""The job state machine, as pure functions that describe each transition.

A `Transition` names the event, the statuses it may start from and what it writes. The job store
applies it in one atomic Redis step (a Lua script) that re-checks the current state, so a terminal
status never changes, progress never goes back, and two workers never run or finish the same
stage: a worker *claims* a stage with an owner token and a lease (in Redis time), renews it while
it works, and every later transition of that run must still hold it.

    queued ──started──▶ running ──progress / stage_completed / retrying / started (next stage)
      │                    │
      │                    ├──completed──▶ completed
      ├────────────────────┼──failed─────▶ failed ──replay (POST /v1/jobs/{id}/retry)──▶ queued
      └────────────────────┴──cancelled──▶ cancelled
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from vidstream.jobs import ACTIVE, STAGES, ErrorInfo, EventName, Options, Output, Stage, Status
from vidstream.media.info import MediaInfo

# How much of the whole job each stage accounts for. Burning subtitles re-encodes every frame
# and costs about as much as transcribing; a soft subtitle track is a quick remux.
_WEIGHTS_BURN = {Stage.TRANSCRIBE: 0.45, Stage.RENDER: 0.55}
_WEIGHTS_SOFT = {Stage.TRANSCRIBE: 0.9, Stage.RENDER: 0.1}


def overall_progress(options: Options, stage: Stage, fraction: float) -> float:
    """The job's progress (0..1) when `stage` is `fraction` done."""
    weights = _WEIGHTS_BURN if options.burn_subtitles else _WEIGHTS_SOFT
    done_before = sum(weights[s] for s in STAGES[: STAGES.index(stage)])
    fraction = min(max(fraction, 0.0), 1.0)
    return round(min(done_before + weights[stage] * fraction, 1.0), 4)


def retry_delay(attempt: int, base_s: float, cap_s: float, jitter: float) -> float:
    """Exponential backoff with jitter: base x 2^(attempt-1), capped, times `jitter` (0.5..1.5)."""
    return float(min(base_s * 2.0 ** max(attempt - 1, 0), cap_s) * jitter)


@dataclass(frozen=True, slots=True)
class Push:
    """The hand-off a transition makes in the same atomic step (see lua.TRANSITION)."""

    kind: str  # stage: an entry on `stage`'s stream | retry: a delayed entry | dead: a dead letter
    stage: Stage
    delay_ms: int = 0
    code: str = ""
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "stage": self.stage.value, "delay_ms": self.delay_ms,
            "code": self.code, "message": self.message,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Transition:
    event: EventName
    allowed_from: frozenset[Status]
    status: Status
    stage: Stage | None = None
    set_stage: bool = False
    expect_stage: Stage | None = None
    progress: float | None = None  # applied as max(current, progress): never goes back
    skip_if_no_progress: bool = False
    outputs: dict[str, Output] = field(default_factory=dict)  # merged into the job's outputs
    fields: dict[str, str] = field(default_factory=dict)  # other job fields to set
    data: dict[str, Any] = field(default_factory=dict)  # extra payload on the event
    owner: str | None = None  # the run that must hold the stage's lease
    claim: str | None = None  # take the lease for this run (refused while another holds it)
    lease_ms: int = 0
    gen: int | None = None  # with claim: the generation on the entry (older ones are stale)
    max_attempts: int = 0  # refuse to start a try beyond this ("exhausted")
    push: Push | None = None  # the hand-off made in the same step
    release: bool = False  # give up the lease
    finish_stage: Stage | None = None  # refuse if this stage was finished already ("done")
    reset: bool = False  # a replay: attempts, error and the finished stage's lease cleared
    tx: str = field(default_factory=lambda: secrets.token_hex(8))  # makes a resend harmless

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    def to_script_args(self, now: float, maxlen: int, ttl: int) -> str:
        """The single JSON argument the transition Lua script reads."""
        args: dict[str, Any] = {
            "tx": self.tx,
            "event": self.event.value,
            "from": {s.value: True for s in self.allowed_from},
            "status": self.status.value,
            "now": repr(now),
            "maxlen": maxlen,
            "ttl": ttl if self.terminal else 0,
            "persist": not self.terminal,
            "fields": self.fields,
            "data": json.dumps(self.data) if self.data else "",
            "release": self.release or self.terminal,
            "reset": self.reset,
        }
        optional: dict[str, Any] = {
            "stage": (self.stage.value if self.stage else "") if self.set_stage else None,
            "expect_stage": self.expect_stage.value if self.expect_stage else None,
            "owner": self.owner,
            "claim": self.claim,
            "finish": self.finish_stage.value if self.finish_stage else None,
            "gen": self.gen,
            "push": self.push.to_dict() if self.push else None,
        }
        args.update({k: v for k, v in optional.items() if v is not None})
        if self.claim:
            args["lease_ms"] = self.lease_ms
            args["max_attempts"] = self.max_attempts
        if self.progress is not None:
            args["progress"] = self.progress
            args["skip_if_no_progress"] = self.skip_if_no_progress
        if self.outputs:
            args["outputs"] = {name: out.to_dict() for name, out in self.outputs.items()}
        return json.dumps(args)


def start(
    options: Options, stage: Stage, *, owner: str, lease_ms: int, max_attempts: int,
    gen: int | None = None,
) -> Transition:  # fmt: skip
    """A worker claims `stage` for the run `owner` from an entry of generation `gen`, and
    begins it (again, after a crash or a retry, is fine)."""
    return Transition(
        EventName.STARTED, ACTIVE, Status.RUNNING, stage=stage, set_stage=True,
        progress=overall_progress(options, stage, 0.0), claim=owner, lease_ms=lease_ms,
        gen=gen, max_attempts=max_attempts,
    )  # fmt: skip


def progress(options: Options, stage: Stage, fraction: float, *, owner: str) -> Transition:
    return Transition(
        EventName.PROGRESS, frozenset({Status.RUNNING}), Status.RUNNING, expect_stage=stage,
        progress=overall_progress(options, stage, fraction), skip_if_no_progress=True,
        data={"stage_progress": round(min(max(fraction, 0.0), 1.0), 4)}, owner=owner,
    )  # fmt: skip


def stage_completed(
    options: Options, stage: Stage, outputs: dict[str, Output], media: MediaInfo | None = None,
    *, owner: str, next_stage: Stage | None = None,
) -> Transition:  # fmt: skip
    """`stage` stored its outputs; in the same step the job goes on to `next_stage`."""
    fields = {"media": json.dumps(media.to_dict())} if media else {}
    return Transition(
        EventName.STAGE_COMPLETED, frozenset({Status.RUNNING}), Status.RUNNING,
        expect_stage=stage, progress=overall_progress(options, stage, 1.0), outputs=outputs,
        fields=fields, data={"outputs": sorted(outputs)}, owner=owner, release=True,
        finish_stage=stage, push=Push("stage", next_stage) if next_stage else None,
    )  # fmt: skip


def complete(outputs: dict[str, Output], *, owner: str) -> Transition:
    return Transition(
        EventName.COMPLETED, frozenset({Status.RUNNING}), Status.COMPLETED, stage=None,
        set_stage=True, progress=1.0, outputs=outputs, data={"outputs": sorted(outputs)},
        owner=owner,
    )  # fmt: skip


def retrying(
    error: ErrorInfo, stage: Stage, attempt: int, delay_s: float, *, owner: str
) -> Transition:
    """The run failed for a transient reason; `stage` runs again after `delay_s` (timed by
    Redis, which holds the delayed entry)."""
    return Transition(
        EventName.RETRYING, frozenset({Status.RUNNING}), Status.RUNNING, owner=owner,
        release=True, fields={"error": json.dumps(error.to_dict())},
        data={"error": error.to_dict(), "attempt": attempt, "retry_in_s": round(delay_s, 3)},
        push=Push("retry", stage, delay_ms=int(delay_s * 1000)),
    )  # fmt: skip


def fail(
    error: ErrorInfo, *, owner: str | None = None, dead_letter: Stage | None = None
) -> Transition:
    """The job fails; with `dead_letter`, it also goes on the dead-letter stream, in one step."""
    data: dict[str, Any] = {"error": error.to_dict()}
    push = None
    if dead_letter is not None:
        data["dead_letter"] = True
        push = Push("dead", dead_letter, code=error.code, message=error.message)
    return Transition(
        EventName.FAILED, ACTIVE, Status.FAILED, owner=owner,
        fields={"error": json.dumps(error.to_dict())}, data=data, push=push,
    )  # fmt: skip


def cancel() -> Transition:
    return Transition(EventName.CANCELLED, ACTIVE, Status.CANCELLED)


def replay(first_stage: Stage) -> Transition:
    """A failed job runs again (`POST /v1/jobs/{id}/retry`): a new run starts at `queued` and is
    handed to `first_stage`, keeping what finished stages stored."""
    return Transition(
        EventName.QUEUED, frozenset({Status.FAILED}), Status.QUEUED, stage=None, set_stage=True,
        fields={"error": ""}, data={"replay": True}, reset=True, push=Push("stage", first_stage),
    )  # fmt: skip
