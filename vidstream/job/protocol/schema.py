"""Every value the job protocol speaks: event names, outcomes, hand-off kinds, and the job hash.

The job hash (`keys.job`) is a flat hash of strings. `Field` lists every field it may hold, the
ones `job.model.Job` reads and the ones only the protocol keeps (lease, generation, resend
detection); `MEANING` says what each one is, and a test checks that the Lua scripts touch no
other.
`JobView` is the part of the hash an operation reads, parsed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from vidstream.job.model import Status


class EventName(StrEnum):
    """What an entry of a job's event history says happened (clients see these)."""

    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    STAGE_COMPLETED = "stage_completed"
    RETRYING = "retrying"  # a stage failed for a transient reason and will run again
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Outcome(StrEnum):
    """What became of an operation. Only OK changed anything."""

    OK = "ok"
    MISSING = "missing"  # no such job (or it expired)
    REJECTED = "rejected"  # the job's status or stage does not allow it
    LOST = "lost"  # another run holds the stage: this run was presumed dead
    BUSY = "busy"  # a claim while a live run holds the job
    STALE = "stale"  # a claim from an entry older than the job's last hand-off
    EXHAUSTED = "exhausted"  # a claim beyond the stage's attempts
    DONE = "done"  # the stage was finished already
    UNCHANGED = "unchanged"  # progress that does not move the job forward


class Intake(StrEnum):
    """What became of creating a job from an upload in one step (`job_create_from_upload.lua`), and
    what the gateway's storage check found (OK, MISSING or TOO_LARGE), which the step reports
    only to the upload's own tenant."""

    OK = "ok"
    PAUSED = "paused"  # the gateway's intake is paused
    NOT_YOURS = "not_yours"  # no ticket, another tenant's, or used by a job already
    MISSING = "missing"  # nothing was uploaded to the key
    TOO_LARGE = "too_large"  # the upload is over MAX_UPLOAD_BYTES
    EXISTS = "exists"  # the job id is taken
    KEY_TAKEN = "key_taken"  # the Idempotency-Key is no longer this request's reservation


class PushKind(StrEnum):
    """The hand-off an operation makes in the same atomic step."""

    STAGE = "stage"  # an entry on the stage's stream
    RETRY = "retry"  # a member of the delayed set, due after a delay
    DEAD = "dead"  # an entry on the dead-letter stream
    NOTICE = "notice"  # a cancel notice on the control stream, for the worker running the job


class Notice(StrEnum):
    """The `action` of an entry on the control stream (a NOTICE hand-off), read by workers."""

    CANCEL = "cancel"  # stop the job's run now; written by `job_transition.lua` on a cancel


class Field(StrEnum):
    ID = "id"
    TENANT = "tenant"
    KIND = "kind"
    SOURCE = "source"
    SOURCE_NAME = "source_name"
    OPTIONS = "options"
    TIMELINE = "timeline"
    ASSETS = "assets"
    STATUS = "status"
    STAGE = "stage"
    PROGRESS = "progress"
    CREATED_AT = "created_at"
    UPDATED_AT = "updated_at"
    OUTPUTS = "outputs"
    ERROR = "error"
    ATTEMPTS = "attempts"
    MEDIA = "media"
    WEBHOOK_URL = "webhook_url"
    REQUEST_ID = "request_id"
    PRIORITY = "priority"
    IDEMPOTENCY = "idempotency"
    RUN_FROM = "run_from"
    DONE = "done"
    OWNER = "owner"
    LEASE_UNTIL = "lease_until"
    GEN = "gen"
    HANDED_BACK = "handed_back"
    LAST_TX = "last_tx"
    LAST_EVENT = "last_event"


MEANING: dict[Field, str] = {
    Field.ID: "the job id (26 characters, sorts by creation time)",
    Field.TENANT: "who the job belongs to",
    Field.KIND: "the pipeline the job runs (jobs.Kind)",
    Field.SOURCE: "the storage key of the source video",
    Field.SOURCE_NAME: "the client's name for it, cleaned (names the downloads)",
    Field.OPTIONS: "JSON of jobs.Options",
    Field.TIMELINE: "compose: the timeline, JSON with every default filled in (else empty)",
    Field.ASSETS: "compose: JSON list of the upload keys the timeline reads, deleted with it",
    Field.STATUS: "queued | running | completed | failed | cancelled",
    Field.STAGE: "the stage last claimed (empty while queued and once completed)",
    Field.PROGRESS: "0..1 over the whole job; never decreases",
    Field.CREATED_AT: "Unix time of creation",
    Field.UPDATED_AT: "Unix time of the last change",
    Field.OUTPUTS: "JSON {name: {key, size, content_type}}, merged as stages store them",
    Field.ERROR: "JSON {code, message} of the failure, or of the error a retry waits out",
    Field.ATTEMPTS: "tries of the current stage, crashes included (1 for the first)",
    Field.MEDIA: "JSON of what the probe learnt about the source",
    Field.WEBHOOK_URL: "where the job's end is POSTed (empty: nowhere); see webhooks",
    Field.REQUEST_ID: "X-Request-Id of the request that created it, bound to every log line",
    Field.PRIORITY: "high | normal | low: which of the stage's streams its entries go on",
    Field.IDEMPOTENCY: "the Redis key of the Idempotency-Key entry that names it, if any",
    Field.RUN_FROM: "the event id where its latest run began (a replay); older ids: a reset",
    Field.DONE: "comma-separated stages whose outputs are stored; never run again",
    Field.OWNER: "the run holding the stage's lease (worker name and a nonce), or empty",
    Field.LEASE_UNTIL: "Redis time (ms) when the owner's lease lapses unless renewed",
    Field.GEN: "the generation of the last hand-off; entries carry it, older ones are stale",
    Field.HANDED_BACK: "'1' after a shutdown handed the run back: its next claim is no new try",
    Field.LAST_TX: "the id of the last operation applied, so a resend changes nothing",
    Field.LAST_EVENT: "the event id that operation wrote, answered again to a resend",
}


@dataclass(frozen=True, slots=True)
class JobView:
    """What an operation reads of the job hash (the fields `job_transition.lua` reads, alike)."""

    status: Status
    stage: str  # "" when none
    owner: str  # "" when none
    lease_until: int
    attempts: int
    gen: int
    done: tuple[str, ...]
    progress: float
    handed_back: bool
    outputs: str  # JSON, as stored

    @classmethod
    def of(cls, job: Mapping[str, str]) -> JobView:
        return cls(
            status=Status(job[Field.STATUS]),
            stage=job.get(Field.STAGE, ""),
            owner=job.get(Field.OWNER, ""),
            lease_until=int(job.get(Field.LEASE_UNTIL) or 0),
            attempts=int(job.get(Field.ATTEMPTS) or 0),
            gen=int(job.get(Field.GEN) or 0),
            done=tuple(s for s in job.get(Field.DONE, "").split(",") if s),
            progress=float(job.get(Field.PROGRESS) or 0.0),
            handed_back=job.get(Field.HANDED_BACK) == "1",
            outputs=job.get(Field.OUTPUTS) or "{}",
        )

    def merged_outputs(self, more: Mapping[str, Any]) -> str:
        """The job's outputs with `more` ({name: Output.to_dict()}) stored over them, as JSON."""
        return json.dumps({**json.loads(self.outputs), **more})
