"""The job protocol: the one place where a job's life is defined. Pure; no I/O.

    queued ──claim──▶ running ──progress / finish (to the next stage) / retry / claim (again)
      │                  │
      │                  ├──finish (last stage)──▶ completed
      ├──────────────────┼──fail─────────────────▶ failed ──replay──▶ queued
      └──────────────────┴──cancel───────────────▶ cancelled

- `schema`: the values the protocol speaks (event names, outcomes, hand-offs) and every field of
  the job hash with its meaning.
- `ops`: the named operations (claim, progress, finish stage, retry, fail, cancel, hand back,
  replay), each carrying what was decided, and their encoding for Lua.
- `model`: the reference semantics of each operation; `job_transition.lua` mirrors it atomically.
- `events`: an entry of a job's history as clients see it.

What a worker does after an outcome or an error (retry after how long, dead letter, fail, hand on)
is `policy`; which stages a kind of job runs is `pipelines`.
"""

from vidstream.job.protocol.events import Event
from vidstream.job.protocol.ops import (
    Cancel,
    Claim,
    Fail,
    FinishStage,
    HandBack,
    Op,
    Progress,
    Push,
    Replay,
    Retry,
)
from vidstream.job.protocol.schema import EventName, Field, Intake, Notice, Outcome, PushKind

__all__ = [
    "Cancel",
    "Claim",
    "Event",
    "EventName",
    "Fail",
    "Field",
    "FinishStage",
    "HandBack",
    "Intake",
    "Notice",
    "Op",
    "Outcome",
    "Progress",
    "Push",
    "PushKind",
    "Replay",
    "Retry",
]
