"""What each operation of the job protocol requires, written apart from its code.

`job_transition.lua` runs the guards `ops.encode` sends it, so comparing the Lua with the model
cannot catch a guard missing from an operation's declaration: both would miss it. This table,
written from the protocol's rules (docs and `protocol/__init__.py`), not from `ops.py`, can.
"""

from __future__ import annotations

import pytest

from vidstream.job.model import ErrorInfo, Stage
from vidstream.job.protocol import (
    Cancel,
    Claim,
    Fail,
    FinishStage,
    HandBack,
    Op,
    Outcome,
    Progress,
    Replay,
    Retry,
)
from vidstream.job.protocol.ops import encode

ERROR = ErrorInfo("x", "x")
RENDER = Stage.RENDER

# The statuses each operation applies in, and what it requires of the job, in the order it
# checks: a claim that is stale is refused as stale even when the stage is also done.
REQUIRES: dict[str, tuple[set[str], list[str]]] = {
    "claim": ({"queued", "running"}, ["current", "unfinished", "lease_free", "tries_left"]),
    "progress": ({"running"}, ["at_stage", "holds", "forward"]),
    "finish": ({"running"}, ["at_stage", "holds", "unfinished"]),
    "retry": ({"running"}, ["holds"]),
    "fail": ({"queued", "running"}, ["holds"]),
    "cancel": ({"queued", "running"}, []),
    "handback": ({"running"}, ["holds"]),
    "replay": ({"failed"}, []),
}
# What a client is told when a requirement does not hold.
REFUSED_AS = {
    "current": Outcome.STALE, "unfinished": Outcome.DONE, "lease_free": Outcome.BUSY,
    "tries_left": Outcome.EXHAUSTED, "at_stage": Outcome.REJECTED, "holds": Outcome.LOST,
    "forward": Outcome.UNCHANGED,
}  # fmt: skip

EXAMPLES: list[Op] = [
    Claim(stage=RENDER, owner="w:1", lease_ms=1000, max_attempts=3, progress=0.5, gen=1),
    Progress(stage=RENDER, owner="w:1", progress=0.6, stage_progress=0.2),
    FinishStage(stage=RENDER, owner="w:1", outputs={}, next_stage=None, progress=1.0),
    Retry(stage=RENDER, owner="w:1", error=ERROR, attempt=1, delay_s=1.0),
    Fail(error=ERROR, owner="w:1"),
    Cancel(),
    HandBack(stage=RENDER, owner="w:1"),
    Replay(first_stage=RENDER),
]


def test_every_operation_has_a_row() -> None:
    assert sorted(op.name for op in EXAMPLES) == sorted(REQUIRES)


@pytest.mark.parametrize("op", EXAMPLES, ids=lambda op: op.name)
def test_each_operation_requires_what_the_protocol_says(op: Op) -> None:
    """The statuses, the requirements in order and their refusals, as the Lua receives them."""
    statuses, guards = REQUIRES[op.name]
    sent = encode(op, 0.0)
    assert set(sent["from"]) == statuses
    assert [name for name, _ in sent["guards"]] == guards
    assert all(outcome == REFUSED_AS[name] for name, outcome in sent["guards"])
