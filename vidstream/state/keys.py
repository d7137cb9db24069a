"""Every Redis key, stream and consumer-group name vidstream uses, in one place.

Keys of one job share the hash tag `{<job id>}` so a per-job atomic step (a Lua script touching the
job hash and its event stream) stays in one Redis Cluster slot. Streams shared by all jobs are few.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidstream.job.model import PRIORITIES, Priority, Stage


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "vs"

    def job(self, job_id: str) -> str:
        """Hash: the job's fields (every one is listed in `protocol.schema.Field`)."""
        return f"{self.prefix}:job:{{{job_id}}}"

    def job_events(self, job_id: str) -> str:
        """Stream: the job's event history, one entry per state change, in order."""
        return f"{self.prefix}:job:{{{job_id}}}:events"

    def job_logs(self, job_id: str) -> str:
        """Stream: the log lines every role wrote about the job, about 500 newest, expiring with
        the job (`joblogs`)."""
        return f"{self.prefix}:job:{{{job_id}}}:logs"

    def job_objects(self, job_id: str) -> str:
        """Set: `stage|key` of every object a run of the job stored, added before its bytes are
        written, so retention deletes it whatever became of the run (`actors.outputs`)."""
        return f"{self.prefix}:job:{{{job_id}}}:objects"

    def job_pieces(self, job_id: str) -> str:
        """Hash: a fanned-out stage's plan (its pieces) and each piece's lease, tries, progress
        and result (`state.pieces`)."""
        return f"{self.prefix}:job:{{{job_id}}}:pieces"

    def piece_stream(self, stage: Stage) -> str:
        """Stream of the pieces of fanned-out jobs at `stage`, one entry each, read by the
        stage's workers before its other streams: a started job's pieces go first."""
        return f"{self.prefix}:stream:{stage.value}:pieces"

    def stage_stream(self, stage: Stage, priority: Priority = Priority.NORMAL) -> str:
        """Stream of work for one stage at one priority, read by that role's consumer group
        (normal keeps the name the only stream had before priorities)."""
        if priority is Priority.NORMAL:
            return f"{self.prefix}:stream:{stage.value}"
        return f"{self.prefix}:stream:{stage.value}:{priority.value}"

    def stage_streams(self, stage: Stage) -> tuple[str, ...]:
        """The stage's streams, in the order a worker reads them: high, normal, low."""
        return tuple(self.stage_stream(stage, p) for p in PRIORITIES)

    def worker_streams(self, stage: Stage) -> tuple[str, ...]:
        """Every stream a stage's workers read, in the order they read them: the pieces of
        fanned-out jobs, then the stage's own (high, normal, low)."""
        return (self.piece_stream(stage), *self.stage_streams(stage))

    def stage_group(self, stage: Stage) -> str:
        """The consumer group of the stage's workers (the same name on each of its streams)."""
        return f"{self.prefix}:{stage.value}"

    @property
    def events(self) -> str:
        """Stream: every job event, whole, with its job id; every notifier tails it."""
        return f"{self.prefix}:events"

    def slot(self, host: str, role: str, index: int | str) -> str:
        """String with a TTL: which process holds worker slot `index` of `role` on `host`."""
        return f"{self.prefix}:slot:{host}:{role}:{index}"

    def worker(self, name: str) -> str:
        """Hash with a TTL of about three heartbeats: what worker `name` (its consumer name) is
        and runs, rewritten every heartbeat (`ops.workers`); gone once its process is."""
        return f"{self.prefix}:worker:{name}"

    @property
    def workers(self) -> str:
        """Sorted set: worker names scored by their last heartbeat (Unix s, the worker's clock);
        a name whose `worker` hash is gone is a worker that stopped or died."""
        return f"{self.prefix}:workers"

    @property
    def storage_users(self) -> str:
        """Sorted set: the live processes of the deployment and the files their storage reaches,
        `<place>|<nonce>|<where>` scored by when each lapses (ms, Redis time): a process whose
        storage reaches other files refuses to start (`state.sharing`)."""
        return f"{self.prefix}:storage-users"

    def stage_runs(self, stage: Stage) -> str:
        """Sorted set: the stage's runs that recorded an outcome in the last hour (a few
        thousand at most), `<seconds>|<outcome>|<nonce>` scored by end time (ms, Redis time)."""
        return f"{self.prefix}:runs:{stage.value}"

    @property
    def delayed(self) -> str:
        """Sorted set: retries waiting to run, `stage|job id|generation|priority` scored by due
        time (ms, Redis time)."""
        return f"{self.prefix}:delayed"

    @property
    def dead_letters(self) -> str:
        """Stream: jobs that ran out of attempts, with their last error."""
        return f"{self.prefix}:dead"

    @property
    def status_counts(self) -> str:
        """Hash: how many jobs are in each status (kept by the Lua scripts; retention takes
        removed jobs off)."""
        return f"{self.prefix}:status-counts"

    @property
    def retention(self) -> str:
        """Sorted set: ended jobs by the Unix time they are to be removed, with their outputs."""
        return f"{self.prefix}:retention"

    @property
    def abandoned_uploads(self) -> str:
        """Sorted set: upload keys by the Unix time their ticket expires; a key no job took by
        then is deleted from storage."""
        return f"{self.prefix}:uploads"

    def paused(self, role: str) -> str:
        """String: present while `role` takes no new work (`vidstream pause ROLE`)."""
        return f"{self.prefix}:paused:{role}"

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

    @property
    def replicated(self) -> str:
        """Pub/sub channel nobody reads: a PUBLISH on it before WAIT makes WAIT cover everything
        written so far (`state.replication`)."""
        return f"{self.prefix}:replicated"

    def rate(self, key_id: str) -> str:
        """String with a TTL: the rate limiter's next allowed time (ms) for one API key."""
        return f"{self.prefix}:rate:{key_id}"

    def upload(self, key: str) -> str:
        """String with a TTL: JSON of the upload handed out at storage `key` (its tenant, the
        client's file name); taken by the one job that uses it."""
        return f"{self.prefix}:upload:{key}"

    def templates(self, tenant: str) -> str:
        """Hash: the tenant's compose templates, name -> JSON (`state.templates`)."""
        return f"{self.prefix}:tenant:{tenant}:templates"

    def lock(self, name: str) -> str:
        """String with a short TTL: which process does the periodic step `name` this period."""
        return f"{self.prefix}:lock:{name}"

    def pattern(self) -> str:
        """A SCAN pattern matching every key under this prefix."""
        return f"{self.prefix}:*"
