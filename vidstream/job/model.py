"""The job: its kind, status, stages, options and outputs, and how each is (de)serialised.

Pure data. Redis stores a job as a flat hash of strings (`Job.to_redis`; every field is listed in
`protocol.schema`); the HTTP and WebSocket layers present it as JSON. Its options are read back
as its kind declares them (`kinds`); stages and priorities are declared in `stages`.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from vidstream.job.kinds import DEFAULT, KINDS, Kind, parse_kind
from vidstream.job.options import FORMATS, Options
from vidstream.job.stages import PRIORITIES, Priority, Stage, parse_priority
from vidstream.media.info import MediaInfo


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})


@dataclass(frozen=True, slots=True)
class Output:
    key: str
    size: int
    content_type: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "content_type": self.content_type}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Output:
        return cls(
            key=str(data["key"]), size=int(data["size"]), content_type=str(data["content_type"])
        )


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    source_key: str
    options: Options = field(default_factory=Options)
    tenant: str = "default"
    kind: Kind = DEFAULT
    status: Status = Status.QUEUED
    stage: Stage | None = None
    progress: float = 0.0
    created_at: float = 0.0
    updated_at: float = 0.0
    outputs: dict[str, Output] = field(default_factory=dict)
    error: ErrorInfo | None = None
    attempts: int = 0
    media: MediaInfo | None = None
    done: frozenset[Stage] = frozenset()  # stages finished: their outputs are stored
    webhook_url: str = ""  # POSTed the job when it ends (see webhooks)
    source_name: str = ""  # the client's file name, cleaned; names the downloads
    request_id: str = ""  # of the HTTP request that created it: one grep follows it everywhere
    priority: Priority = Priority.NORMAL
    timeline: str = ""  # compose: the timeline (JSON, every default filled in)
    assets: tuple[str, ...] = ()  # uploads its request named (a timeline's); deleted with it
    # Kept by the protocol alone (never written from here), so not part of equality.
    run_from: str = field(default="", compare=False)  # where its latest run began (a replay)
    last_event: str = field(default="", compare=False)  # the id of its newest event

    @classmethod
    def new(
        cls, source_key: str, options: Options, tenant: str = "default",
        kind: Kind = DEFAULT, webhook_url: str = "", source_name: str = "",
    ) -> Job:  # fmt: skip
        now = time.time()
        return cls(
            id=new_job_id(now),
            source_key=source_key,
            options=options,
            tenant=tenant,
            kind=kind,
            webhook_url=webhook_url,
            source_name=source_name,
            created_at=now,
            updated_at=now,
        )

    def to_redis(self) -> dict[str, str]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "kind": self.kind.value,
            "source": self.source_key,
            "options": json.dumps(self.options.to_dict()),
            "status": self.status.value,
            "stage": self.stage.value if self.stage else "",
            "progress": repr(self.progress),
            "created_at": repr(self.created_at),
            "updated_at": repr(self.updated_at),
            "outputs": json.dumps({k: v.to_dict() for k, v in self.outputs.items()}),
            "error": json.dumps(self.error.to_dict()) if self.error else "",
            "attempts": str(self.attempts),
            "media": json.dumps(self.media.to_dict()) if self.media else "",
            "webhook_url": self.webhook_url,
            "source_name": self.source_name,
            "request_id": self.request_id,
            "priority": self.priority.value,
            "timeline": self.timeline,
            "assets": json.dumps(list(self.assets)) if self.assets else "",
        }

    @classmethod
    def from_redis(cls, raw: dict[str, str]) -> Job:
        error = json.loads(raw["error"]) if raw.get("error") else None
        kind = Kind(raw.get("kind") or DEFAULT)
        return cls(
            id=raw["id"],
            tenant=raw.get("tenant", "default"),
            kind=kind,
            source_key=raw["source"],
            options=KINDS[kind].options.parse(json.loads(raw["options"])),
            status=Status(raw["status"]),
            stage=Stage(raw["stage"]) if raw.get("stage") else None,
            progress=float(raw.get("progress", 0.0)),
            created_at=float(raw["created_at"]),
            updated_at=float(raw["updated_at"]),
            outputs={
                k: Output.from_dict(v) for k, v in json.loads(raw.get("outputs") or "{}").items()
            },
            error=ErrorInfo(**error) if error else None,
            attempts=int(raw.get("attempts", 0)),
            media=MediaInfo.from_dict(json.loads(raw["media"])) if raw.get("media") else None,
            done=frozenset(Stage(s) for s in (raw.get("done") or "").split(",") if s),
            webhook_url=raw.get("webhook_url", ""),
            source_name=raw.get("source_name", ""),
            request_id=raw.get("request_id", ""),
            priority=Priority(raw.get("priority") or Priority.NORMAL),
            timeline=raw.get("timeline", ""),
            assets=tuple(json.loads(raw["assets"])) if raw.get("assets") else (),
            run_from=raw.get("run_from", ""),
            last_event=raw.get("last_event", ""),
        )

    def with_changes(self, **changes: Any) -> Job:
        return replace(self, **changes)


_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_job_id(now: float | None = None) -> str:
    """A 26-character id that sorts by creation time (ULID layout, lowercase Crockford base32)."""
    value = (int((time.time() if now is None else now) * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


_JOB_ID_RE = re.compile(r"[0-9a-hjkmnp-tv-z]{26}")


def is_job_id(value: str) -> bool:
    # fullmatch: "$" would also accept a trailing newline.
    return bool(_JOB_ID_RE.fullmatch(value))


def isoformat(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = [
    "ACTIVE", "FORMATS", "PRIORITIES", "TERMINAL", "ErrorInfo", "Job", "Kind", "Options", "Output",
    "Priority", "Stage", "Status", "is_job_id", "isoformat", "new_job_id", "parse_kind",
    "parse_priority",
]  # fmt: skip
