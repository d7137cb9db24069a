"""The reference semantics of every operation: pure Python, no Redis.

`apply` says, for a job hash as it is and an operation, whether the operation applies and, if so,
every field it writes, the event it records and the hand-off it makes. `lua.TRANSITION` does the
same in one atomic step; `tests/test_protocol_model.py` drives both side by side with random
sequences of operations and checks that they agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from vidstream.job.model import Status
from vidstream.job.protocol.ops import (
    Claim,
    Fail,
    FinishStage,
    HandBack,
    Op,
    Progress,
    Push,
    Retry,
    encode,
    push_of,
    target_status,
)
from vidstream.job.protocol.schema import Field, Outcome, PushKind


def out_of_attempts(attempt: int, max_attempts: int) -> bool:
    """Whether try number `attempt` of a stage is one too many. The one place this is decided:
    claims here and the retry policy ask it; the Lua claim mirrors the comparison (the count is
    read inside the atomic step) and tests/test_protocol_model.py checks that the two agree."""
    return max_attempts > 0 and attempt > max_attempts


@dataclass(frozen=True, slots=True)
class Step:
    """What `apply` decided. Only an OK step carries writes, an event and a push."""

    outcome: Outcome
    status: Status | None
    attempts: int = 0
    gen: int = 0
    writes: dict[str, str] = field(default_factory=dict)
    deletes: tuple[str, ...] = ()
    event: dict[str, str] | None = None  # the fields of the event entry
    push: Push | None = None
    expire: bool = False  # terminal: removed after JOB_RETENTION_S (else kept)
    webhook: bool = False  # terminal, and the job has a webhook_url: an entry for the deliverer
    resent: bool = False  # the op was applied before; nothing changed now


def _done(raw: str) -> list[str]:
    return [s for s in raw.split(",") if s]


def apply(job: Mapping[str, str], op: Op, now_ms: int, now: float) -> Step:
    """Apply `op` to the job hash `job` at Redis time `now_ms` (and Unix time `now`)."""
    if not job:
        return Step(Outcome.MISSING, None)
    status = Status(job[Field.STATUS])
    attempts, gen = int(job.get(Field.ATTEMPTS) or 0), int(job.get(Field.GEN) or 0)
    if op.tx == job.get(Field.LAST_TX):
        return Step(Outcome.OK, status, attempts, gen, resent=True)

    def refuse(outcome: Outcome, tries: int = attempts) -> Step:
        return Step(outcome, status, tries, gen)

    if status not in op.allowed_from:
        return refuse(Outcome.REJECTED)
    stage, owner = job.get(Field.STAGE, ""), job.get(Field.OWNER, "")
    done = _done(job.get(Field.DONE, ""))
    progress = float(job.get(Field.PROGRESS) or 0.0)
    writes: dict[str, str] = {}
    deletes: tuple[str, ...] = ()

    match op:
        case Claim():
            lease_live = (
                owner not in ("", op.owner) and int(job.get(Field.LEASE_UNTIL) or 0) > now_ms
            )
            if op.gen is not None and op.gen != gen:
                return refuse(Outcome.STALE)
            if op.stage.value in done:
                return refuse(Outcome.DONE)
            if lease_live:
                return refuse(Outcome.BUSY)
            if job.get(Field.HANDED_BACK) == "1":  # handed back at a shutdown: not a new try
                tries = attempts if stage == op.stage.value and attempts > 0 else 1
            else:
                tries = attempts + 1 if stage == op.stage.value else 1
            if out_of_attempts(tries, op.max_attempts):
                return refuse(Outcome.EXHAUSTED, tries - 1)
            attempts, stage, progress = tries, op.stage.value, max(progress, op.progress)
            writes = {Field.OWNER: op.owner, Field.LEASE_UNTIL: str(now_ms + op.lease_ms)}
            deletes = (Field.HANDED_BACK,)
        case Progress():
            if stage != op.stage.value:
                return refuse(Outcome.REJECTED)
            if owner != op.owner:
                return refuse(Outcome.LOST)
            if op.outputs:  # a stage's early output (a preview): stored whatever the progress
                outputs = json.loads(job.get(Field.OUTPUTS) or "{}")
                outputs.update({k: v.to_dict() for k, v in op.outputs.items()})
                writes = {Field.OUTPUTS: json.dumps(outputs)}
            elif op.progress <= progress:
                return refuse(Outcome.UNCHANGED)
            progress = max(progress, op.progress)
        case FinishStage():
            if stage != op.stage.value:
                return refuse(Outcome.REJECTED)
            if owner != op.owner:
                return refuse(Outcome.LOST)
            if op.stage.value in done:
                return refuse(Outcome.DONE)
            outputs = json.loads(job.get(Field.OUTPUTS) or "{}")
            outputs.update({k: v.to_dict() for k, v in op.outputs.items()})
            progress = max(progress, op.progress)
            writes = {Field.OUTPUTS: json.dumps(outputs), Field.DONE: ",".join([*done, stage])}
            if op.media is not None:
                writes[Field.MEDIA] = json.dumps(op.media.to_dict())
            if op.next_stage is None:
                stage = ""
        case Retry() | HandBack():
            if owner != op.owner:
                return refuse(Outcome.LOST)
            if isinstance(op, Retry):
                writes = {Field.ERROR: encode(op, now)["error"]}
            else:
                writes = {Field.HANDED_BACK: "1"}
        case Fail():
            if op.owner is not None and owner != op.owner:
                return refuse(Outcome.LOST)
            writes = {Field.ERROR: encode(op, now)["error"]}
        case _:  # Cancel, Replay
            if target_status(op) is Status.QUEUED:  # a replay: a new run of the job
                stage, attempts = "", 0
                writes = {Field.ERROR: ""}

    new_status = target_status(op)
    if not isinstance(op, Claim | Progress):
        writes.update({Field.OWNER: "", Field.LEASE_UNTIL: "0"})  # the run lets the stage go
    push = push_of(op)
    if push is not None and push.kind in (PushKind.STAGE, PushKind.RETRY):
        gen += 1
    writes.update({
        Field.STATUS: new_status.value, Field.STAGE: stage, Field.PROGRESS: repr(progress),
        Field.UPDATED_AT: repr(now), Field.ATTEMPTS: str(attempts), Field.GEN: str(gen),
        Field.LAST_TX: op.tx,
    })  # fmt: skip
    event = None
    if op.event is not None:
        args = encode(op, now)
        event = {
            "event": op.event.value, "status": new_status.value, "stage": stage,
            "progress": repr(progress), "at": repr(now), "attempts": str(attempts),
            "data": args["data"], "kind": job.get(Field.KIND) or "subtitle",
        }  # fmt: skip
    webhook = new_status.terminal and bool(job.get(Field.WEBHOOK_URL))
    return Step(Outcome.OK, new_status, attempts, gen, writes, deletes, event, push,
                expire=new_status.terminal, webhook=webhook)  # fmt: skip
