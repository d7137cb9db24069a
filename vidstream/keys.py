"""Every Redis key, stream and consumer-group name vidstream uses, in one place.

Keys of one job share the hash tag `{<job id>}` so a per-job atomic step (a Lua script touching the
job hash and its event stream) stays in one Redis Cluster slot. Streams shared by all jobs are few.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidstream.jobs import Stage


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "vs"

    def job(self, job_id: str) -> str:
        """Hash: the job's fields (every one is listed in `protocol.schema.Field`)."""
        return f"{self.prefix}:job:{{{job_id}}}"

    def job_events(self, job_id: str) -> str:
        """Stream: the job's event history, one entry per state change, in order."""
        return f"{self.prefix}:job:{{{job_id}}}:events"

    def stage_stream(self, stage: Stage) -> str:
        """Stream of work for one stage, read by that role's consumer group."""
        return f"{self.prefix}:stream:{stage.value}"

    def stage_group(self, stage: Stage) -> str:
        return f"{self.prefix}:{stage.value}"

    @property
    def events(self) -> str:
        """Stream: one entry per job event, naming the job; every notifier tails it."""
        return f"{self.prefix}:events"

    def slot(self, host: str, role: str, index: int | str) -> str:
        """String with a TTL: which process holds worker slot `index` of `role` on `host`."""
        return f"{self.prefix}:slot:{host}:{role}:{index}"

    @property
    def delayed(self) -> str:
        """Sorted set: retries waiting to run, `stage|job id|generation` scored by due time
        (ms, Redis time)."""
        return f"{self.prefix}:delayed"

    @property
    def dead_letters(self) -> str:
        """Stream: jobs that ran out of attempts, with their last error."""
        return f"{self.prefix}:dead"

    def tenant_jobs(self, tenant: str) -> str:
        """Sorted set: the tenant's job ids scored by creation time, for listings."""
        return f"{self.prefix}:tenant:{tenant}:jobs"

    def idempotency(self, tenant: str, digest: str) -> str:
        """String with a TTL: the job created for an Idempotency-Key (hashed)."""
        return f"{self.prefix}:idem:{tenant}:{digest}"

    @property
    def webhooks(self) -> str:
        """Stream: one entry per ended job that has a webhook_url, for the deliverer."""
        return f"{self.prefix}:webhooks"

    @property
    def webhook_group(self) -> str:
        """Consumer group of the webhook deliverers (one per gateway process) on `webhooks`."""
        return f"{self.prefix}:webhook-deliverers"

    @property
    def webhook_retries(self) -> str:
        """Sorted set: webhook attempts waiting to be made again, as JSON (`webhooks.queue`),
        scored by due time (ms, Redis time)."""
        return f"{self.prefix}:webhooks:retries"

    @property
    def control(self) -> str:
        """Stream: cancellation notices; every worker tails it."""
        return f"{self.prefix}:control"

    def rate(self, key_id: str) -> str:
        """String with a TTL: the rate limiter's next allowed time (ms) for one API key."""
        return f"{self.prefix}:rate:{key_id}"

    def upload(self, key: str) -> str:
        """String with a TTL: JSON of the upload handed out at storage `key` (its tenant, the
        client's file name); taken by the one job that uses it."""
        return f"{self.prefix}:upload:{key}"

    def lock(self, name: str) -> str:
        """String with a short TTL: which process does the periodic step `name` this period."""
        return f"{self.prefix}:lock:{name}"

    def pattern(self) -> str:
        """A SCAN pattern matching every key under this prefix."""
        return f"{self.prefix}:*"
