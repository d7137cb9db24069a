"""An entry of a job's event history, as read back and as clients see it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vidstream.job.model import Kind, Stage, Status, isoformat
from vidstream.job.protocol.schema import EventName


@dataclass(frozen=True, slots=True)
class Event:
    id: str  # the id of the entry in the job's event stream; orders the job's events
    job_id: str
    event: EventName
    status: Status
    stage: Stage | None
    progress: float
    at: float
    data: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0  # the try of the stage this event belongs to (1 for the first)
    kind: Kind = Kind.SUBTITLE

    @classmethod
    def from_stream(cls, job_id: str, entry_id: str, fields: dict[str, str]) -> Event:
        return cls(
            id=entry_id,
            job_id=job_id,
            event=EventName(fields["event"]),
            status=Status(fields["status"]),
            stage=Stage(fields["stage"]) if fields.get("stage") else None,
            progress=float(fields["progress"]),
            at=float(fields["at"]),
            data=json.loads(fields["data"]) if fields.get("data") else {},
            attempts=int(fields.get("attempts") or 0),
            kind=Kind(fields.get("kind") or Kind.SUBTITLE),
        )

    def to_public(self) -> dict[str, Any]:
        """The event as the REST API and the WebSocket present it."""
        return {
            **self.data,
            "type": "event",
            "id": self.id,
            "job_id": self.job_id,
            "kind": self.kind.value,
            "event": self.event.value,
            "status": self.status.value,
            "stage": self.stage.value if self.stage else None,
            "progress": round(self.progress, 4),
            "attempts": self.attempts,
            "at": isoformat(self.at),
        }
