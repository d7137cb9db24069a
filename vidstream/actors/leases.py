"""The lease keeper: a worker's heartbeat for the runs it holds.

Every `interval_s` it renews the lease of each run in one pipelined call and resets the idle time
of their stream entries, so no other worker reclaims a job that is still running however long
it takes. A run whose stage another run took or finished (its lease lapsed: this worker was
presumed dead) or that a cancel released (whose notice was missed) is stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import structlog

from vidstream.actors.run import Lost, Run, RunState
from vidstream.core.tasks import Service, every
from vidstream.state.consumer import StageConsumer
from vidstream.state.jobstore import JobStore, Lease


class LeaseKeeper(Service):
    def __init__(
        self, jobs: JobStore, consumer: StageConsumer, runs: Callable[[], Collection[Run]], *,
        lease_ms: int, interval_s: float, log: structlog.stdlib.BoundLogger,
    ) -> None:  # fmt: skip
        self.jobs, self.consumer, self.runs = jobs, consumer, runs
        self.lease_ms, self.interval_s, self.log = lease_ms, interval_s, log

    async def run(self) -> None:
        await every(self.interval_s, self.beat, "heartbeat", self.stopping)

    async def beat(self) -> None:
        """Renew every held lease; stop the runs that lost theirs."""
        runs = [r for r in self.runs() if r.holds_lease]
        if not runs:
            return
        held = await self.jobs.renew([(r.job_id, r.owner) for r in runs], self.lease_ms)
        for run, lease in zip(runs, held, strict=True):
            match lease:
                case Lease.HELD:
                    pass
                case Lease.TAKEN:
                    run.stop(RunState.LOST, Lost.TAKEN_OVER)
                case Lease.MOVED_ON:
                    run.stop(RunState.LOST, Lost.FINISHED_ELSEWHERE)
                case Lease.RELEASED:  # by a cancel (whose notice this worker may have missed)
                    run.stop(RunState.CANCELLED)
        # (A run released by its own last operation meanwhile is left alone by `stop`.)
        await self.consumer.refresh([r.entry_id for r in runs if r.state is not RunState.LOST])
