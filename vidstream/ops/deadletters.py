"""Jobs that ran out of attempts: listed from the dead-letter stream, and replayed.

A replay starts a new run of the failed job under the same id, from the first stage that did not
finish: a job whose transcript is stored only renders again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from vidstream.job.model import Job, Stage, isoformat
from vidstream.job.protocol import Replay
from vidstream.state import bus
from vidstream.state.jobstore import JobStore


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    job_id: str
    stage: str
    code: str
    message: str
    attempts: int
    at: float
    tenant: str = "default"

    def to_public(self, status: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "job_id": self.job_id,
            "stage": self.stage,
            "error": {"code": self.code, "message": self.message},
            "attempts": self.attempts,
            "at": isoformat(self.at),
            "job_status": status,
        }


async def list_dead(
    jobs: JobStore, limit: int = 100, tenant: str | None = None
) -> list[tuple[DeadLetter, Job | None]]:
    """The newest dead letters first (of `tenant` only, if given), each with its job as it is
    now (None once expired)."""
    letters: list[tuple[DeadLetter, Job | None]] = []
    cursor = "+"
    # Pages of the shared stream, filtered; bounded so one tenant cannot make this scan all.
    for _ in range(20):
        raw = cast(Any, await jobs.redis.xrevrange(jobs.keys.dead_letters, cursor, "-", count=500))
        for entry_id, fields in raw:
            cursor = f"({entry_id}"
            letter = DeadLetter(
                id=str(entry_id), job_id=fields["job_id"], stage=fields["stage"],
                code=fields["code"], message=fields["message"], attempts=int(fields["attempts"]),
                at=float(fields["at"]), tenant=fields.get("tenant", "default"),
            )  # fmt: skip
            if tenant is None or letter.tenant == tenant:
                letters.append((letter, await jobs.get(letter.job_id)))
                if len(letters) >= limit:
                    return letters
        if len(raw) < 500:
            break
    return letters


class ReplayRefused(Exception):
    """The job does not exist (status None) or is not failed (its status)."""

    def __init__(self, status: str | None) -> None:
        super().__init__(status)
        self.status = status


async def replay(jobs: JobStore, job_id: str) -> tuple[Job, Stage]:
    """Queue a failed job again from its first unfinished stage; drop its dead letters.
    Return the job, queued, and the stage it starts from."""
    job = await jobs.get(job_id)
    if job is None:
        raise ReplayRefused(None)
    op = Replay.of(job)
    applied = await jobs.apply(job_id, op)  # queued and handed on, in one step
    if not applied.ok:
        raise ReplayRefused(applied.status.value if applied.status else None)
    job = await jobs.get(job_id)
    assert job is not None
    stale = [
        i
        for i, f in await bus.history(jobs.redis, jobs.keys.dead_letters)
        if f.get("job_id") == job_id
    ]
    if stale:
        await jobs.redis.xdel(jobs.keys.dead_letters, *stale)
    return job, op.first_stage
