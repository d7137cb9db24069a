"""The reference semantics of every operation: pure Python, no Redis.

`apply` says, for a job hash as it is and an operation, whether the operation applies and, if so,
every field it writes, the event it records and the hand-off it makes. It knows no operation by
name: it reads what each declares (`ops`: its statuses, guards, change, target and hand-off) and
adds what every operation does alike. `job_transition.lua` does the same in one atomic step;
`tests/test_protocol_model.py` drives both side by side with sequences of operations and checks
that they agree, and checks both against a table of what each operation leads to, written apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from vidstream.job.kinds import DEFAULT
from vidstream.job.model import Status
from vidstream.job.protocol.ops import Op, Push
from vidstream.job.protocol.schema import Field, JobView, Outcome, PushKind


@dataclass(frozen=True, slots=True)
class Step:
    """What `apply` decided. Only an OK step carries writes, an event and a push."""

    outcome: Outcome
    status: Status | None
    attempts: int = 0
    gen: int = 0
    writes: dict[Field, str] = field(default_factory=dict)
    deletes: tuple[Field, ...] = ()
    event: dict[str, str] | None = None  # the fields of the event entry
    push: Push | None = None
    expire: bool = False  # terminal: removed after JOB_RETENTION_S (else kept)
    webhook: bool = False  # terminal, and the job has a webhook_url: an entry for the deliverer
    resent: bool = False  # the op was applied before; nothing changed now


def apply(job: Mapping[str, str], op: Op, now_ms: int, now: float) -> Step:
    """Apply `op` to the job hash `job` at Redis time `now_ms` (and Unix time `now`)."""
    if not job:
        return Step(Outcome.MISSING, None)
    view = JobView.of(job)
    if op.tx == job.get(Field.LAST_TX):
        return Step(Outcome.OK, view.status, view.attempts, view.gen, resent=True)
    if view.status not in op.allowed_from:
        return Step(Outcome.REJECTED, view.status, view.attempts, view.gen)
    for guard in op.guards():
        if not guard.passes(view, now_ms):
            return Step(guard.outcome, view.status, guard.attempts(view), view.gen)

    change = op.change(view, now_ms)
    writes = dict(change.fields)
    if not op.keeps_stage:  # the run lets the stage go
        writes.update({Field.OWNER: "", Field.LEASE_UNTIL: "0"})
    push = op.push()
    gen = (
        view.gen + 1
        if push is not None and push.kind in (PushKind.STAGE, PushKind.RETRY)
        else view.gen
    )
    status = op.target()
    writes.update({
        Field.STATUS: status.value, Field.STAGE: change.stage,
        Field.PROGRESS: repr(change.progress), Field.UPDATED_AT: repr(now),
        Field.ATTEMPTS: str(change.attempts), Field.GEN: str(gen), Field.LAST_TX: op.tx,
    })  # fmt: skip
    event = None
    if op.event is not None:
        data = op.data()
        event = {
            "event": op.event.value, "status": status.value, "stage": change.stage,
            "progress": repr(change.progress), "at": repr(now),
            "attempts": str(change.attempts), "data": json.dumps(data) if data else "",
            "kind": job.get(Field.KIND) or DEFAULT.value,  # a job written before kinds
        }  # fmt: skip
    return Step(Outcome.OK, status, change.attempts, gen, writes, change.deletes, event, push,
                expire=status.terminal,
                webhook=status.terminal and bool(job.get(Field.WEBHOOK_URL)))  # fmt: skip
