"""The job state machine, as pure functions that describe each transition.

A `Transition` names the event, the statuses it may start from and what it writes. The job store
applies it in one atomic Redis step (a Lua script) that re-checks the current status, so two
workers can never both move a job, a terminal status never changes, and progress never goes back.

    queued ──started──▶ running ──progress / stage_completed / started (next stage)──▶ running
      │                    │
      │                    ├──completed──▶ completed
      ├────────────────────┼──failed─────▶ failed
      └────────────────────┴──cancelled──▶ cancelled
"""

from __future__ import annotations

import json
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

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    def to_script_args(self, now: float, maxlen: int, ttl: int) -> str:
        """The single JSON argument the transition Lua script reads."""
        args: dict[str, Any] = {
            "event": self.event.value,
            "from": {s.value: True for s in self.allowed_from},
            "status": self.status.value,
            "now": repr(now),
            "maxlen": maxlen,
            "ttl": ttl if self.terminal else 0,
            "fields": self.fields,
            "data": json.dumps(self.data) if self.data else "",
        }
        if self.set_stage:
            args["stage"] = self.stage.value if self.stage else ""
        if self.expect_stage is not None:
            args["expect_stage"] = self.expect_stage.value
        if self.progress is not None:
            args["progress"] = self.progress
            args["skip_if_no_progress"] = self.skip_if_no_progress
        if self.outputs:
            args["outputs"] = {name: out.to_dict() for name, out in self.outputs.items()}
        return json.dumps(args)


def start(options: Options, stage: Stage) -> Transition:
    """A worker begins `stage` (again, after a crash or a retry, is fine)."""
    return Transition(
        EventName.STARTED,
        ACTIVE,
        Status.RUNNING,
        stage=stage,
        set_stage=True,
        progress=overall_progress(options, stage, 0.0),
    )


def progress(options: Options, stage: Stage, fraction: float) -> Transition:
    return Transition(
        EventName.PROGRESS,
        frozenset({Status.RUNNING}),
        Status.RUNNING,
        expect_stage=stage,
        progress=overall_progress(options, stage, fraction),
        skip_if_no_progress=True,
        data={"stage_progress": round(min(max(fraction, 0.0), 1.0), 4)},
    )


def stage_completed(
    options: Options, stage: Stage, outputs: dict[str, Output], media: MediaInfo | None = None
) -> Transition:
    fields = {"media": json.dumps(media.to_dict())} if media else {}
    return Transition(
        EventName.STAGE_COMPLETED,
        frozenset({Status.RUNNING}),
        Status.RUNNING,
        expect_stage=stage,
        progress=overall_progress(options, stage, 1.0),
        outputs=outputs,
        fields=fields,
        data={"outputs": sorted(outputs)},
    )


def complete(outputs: dict[str, Output]) -> Transition:
    return Transition(
        EventName.COMPLETED,
        frozenset({Status.RUNNING}),
        Status.COMPLETED,
        stage=None,
        set_stage=True,
        progress=1.0,
        outputs=outputs,
        data={"outputs": sorted(outputs)},
    )


def fail(error: ErrorInfo) -> Transition:
    return Transition(
        EventName.FAILED,
        ACTIVE,
        Status.FAILED,
        fields={"error": json.dumps(error.to_dict())},
        data={"error": error.to_dict()},
    )


def cancel() -> Transition:
    return Transition(EventName.CANCELLED, ACTIVE, Status.CANCELLED)
