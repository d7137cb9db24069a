"""The job protocol: the one place where a job's life is defined. Pure; no I/O.

    queued ──claim──▶ running ──progress / finish (to the next stage) / retry / claim (again)
      │                  │
      │                  ├──finish (last stage)──▶ completed
      ├──────────────────┼──fail─────────────────▶ failed ──replay──▶ queued
      └──────────────────┴──cancel───────────────▶ cancelled

- `schema`: the values the protocol speaks (event names, outcomes, hand-offs), every field of
  the job hash with its meaning, and `JobView`, the part of it an operation reads.
- `guards`: what an operation may require of the job beyond its status, each refusing with its
  own outcome (a live lease: `busy`; another run holds the stage: `lost`; ...).
- `ops`: the named operations (claim, progress, finish stage, retry, fail, cancel, hand back,
  replay), one class each declaring its statuses, guards, writes, target status, hand-off and
  event; and their encoding for `job_transition.lua`, which applies them atomically in Redis.
- `model`: the reference semantics, read from those declarations; tests/test_protocol_model.py
  checks the Lua against it, and both against a table of where each operation leads.
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
