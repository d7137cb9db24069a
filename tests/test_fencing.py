"""Runs presumed dead come back: late writes are fenced off, nothing is written twice, and a run
that finished during a long Redis outage records its outcome once Redis is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from structlog.testing import CapturingLogger

from tests.test_redis_outage import OwnRedis
from vidstream.actors import run as run_module
from vidstream.actors.execute import Executor, new_run
from vidstream.actors.outputs import RunObjects
from vidstream.actors.run import Lost, Run
from vidstream.actors.worker import Worker
from vidstream.core.errors import RunLost
from vidstream.core.settings import Settings
from vidstream.job.model import Job, Kind, Options, Stage, Status
from vidstream.job.policy import Limits
from vidstream.job.protocol import Claim
from vidstream.ops.metrics import Metrics
from vidstream.runtime import Stack
from vidstream.services import Services
from vidstream.storage.names import transcript_key


@pytest.fixture
async def services(make_settings: Callable[..., Settings], redis: Redis) -> AsyncIterator[Services]:
    async with Stack(make_settings(), ("gateway",)) as stack:
        assert stack.services is not None
        yield stack.services


async def transcribe_job(services: Services) -> Job:
    """A job whose only stage is transcribe: finishing that stage completes it."""
    job = Job.new("uploads/x/source", Options(), kind=Kind.TRANSCRIBE)
    await services.jobs.create(job)
    return job


async def claimed(services: Services, job: Job, owner: str, *, lease_ms: int) -> Run:
    """A run of the transcribe stage that has claimed it, as a worker's executor would."""
    run = Run(services.jobs, Stage.TRANSCRIBE, job.id, "0-1", owner=owner)
    claim = Claim.of(job, Stage.TRANSCRIBE, owner=owner, lease_ms=lease_ms, max_attempts=3)
    assert (await services.jobs.apply(job.id, claim)).ok
    run.claimed(job, 1)
    run.objects = RunObjects(services.store, services.jobs, Stage.TRANSCRIBE, job.id, run.log)
    return run


async def store_transcript(run: Run, workdir: Path, text: bytes) -> dict[str, Any]:
    assert run.objects is not None and run.job is not None
    path = workdir / f"{run.tag}.json"
    path.write_bytes(text)
    key = transcript_key(run.job.id, "json", run.tag)
    return {"transcript": await run.objects.put(key, path, "application/json")}


async def test_a_late_run_never_writes_over_the_run_that_took_over(
    services: Services, tmp_path: Path
) -> None:
    """A worker presumed dead (its lease lapsed) wakes after another run took the stage over and
    finished it: its file lands beside, never over, the job's transcript; its finish is fenced
    off (the job keeps the other run's outputs), and what it wrote is deleted."""
    job = await transcribe_job(services)
    late = await claimed(services, job, "host-a:aaaa", lease_ms=1)  # lapses at once
    winner = await claimed(services, job, "host-b:bbbb", lease_ms=60_000)
    await winner.finish(await store_transcript(winner, tmp_path, b'{"by": "winner"}'))
    done = await services.jobs.get(job.id)
    assert done is not None and done.status is Status.COMPLETED
    kept = done.outputs["transcript"].key
    # The late run wakes and goes on as if nothing happened.
    outputs = await store_transcript(late, tmp_path, b'{"by": "the late run"}')
    with pytest.raises(RunLost) as lost:
        await late.finish(outputs)
    assert lost.value.reason == Lost.FINISHED_ELSEWHERE
    assert late.objects is not None
    await late.objects.discard()  # what the executor does once the run stops
    assert await services.store.get_bytes(kept) == b'{"by": "winner"}'
    after = await services.jobs.get(job.id)
    assert after is not None and after.outputs["transcript"].key == kept
    assert await services.store.head(outputs["transcript"].key) is None
    assert await services.jobs.owned_objects(job.id) == [kept]


async def test_the_winner_deletes_what_a_killed_run_left(
    services: Services, tmp_path: Path
) -> None:
    """A run killed after it stored its file but before it recorded it leaves that file behind;
    the run that then finishes the stage deletes it, so the job has one transcript."""
    job = await transcribe_job(services)
    killed = await claimed(services, job, "host-a:aaaa", lease_ms=1)
    left = await store_transcript(killed, tmp_path, b'{"by": "the killed run"}')
    winner = await claimed(services, job, "host-b:bbbb", lease_ms=60_000)
    await winner.finish(await store_transcript(winner, tmp_path, b'{"by": "winner"}'))
    assert winner.objects is not None
    await winner.objects.sweep_superseded()  # what the executor does once the run is recorded
    assert await services.store.head(left["transcript"].key) is None
    done = await services.jobs.get(job.id)
    assert done is not None
    assert await services.jobs.owned_objects(job.id) == [done.outputs["transcript"].key]


async def test_a_run_whose_job_completed_elsewhere_says_so(
    services: Services, tmp_path: Path
) -> None:
    """A worker resumed after another worker completed its job logs `run_lost` with the reason
    (finished elsewhere), not `job_cancelled`: nobody cancelled anything."""
    job = await transcribe_job(services)
    started, resume = asyncio.Event(), asyncio.Event()

    async def process(job: Job, workdir: Path, run: Run) -> None:
        started.set()
        await resume.wait()  # paused: SIGSTOP, a VM frozen, a network cut
        await run.finish(await store_transcript(run, workdir, b'{"by": "the late run"}'))

    acked: list[str] = []

    async def ack(entry_id: str) -> None:
        acked.append(entry_id)

    executor = Executor(
        jobs=services.jobs, stage=Stage.TRANSCRIBE, process=process, ack=ack,
        store=services.store, limits=Limits(3, 0.1, 1.0), lease_ms=1, tmp_root=tmp_path / "tmp",
        metrics=Metrics(),
    )  # fmt: skip
    captured = CapturingLogger()
    log = structlog.wrap_logger(captured, processors=[])
    run = new_run(services.jobs, Stage.TRANSCRIBE, "host-a", "0-1", {"job_id": job.id}, "aaaa", log)
    handling = asyncio.create_task(executor.handle(run))
    async with asyncio.timeout(10):
        await started.wait()
    winner = await claimed(services, job, "host-b:bbbb", lease_ms=60_000)
    await winner.finish(await store_transcript(winner, tmp_path, b'{"by": "winner"}'))
    resume.set()
    async with asyncio.timeout(10):
        await handling
    events = [(call.kwargs.get("event"), call.kwargs.get("reason")) for call in captured.calls]
    assert ("run_lost", Lost.FINISHED_ELSEWHERE) in events
    assert "job_cancelled" not in [event for event, _ in events]
    assert acked == []  # the entry is the other run's business


async def completed(services: Services, job_id: str) -> None:
    """Return once the job's history has its `completed` event (read through a Redis restart)."""
    after = "0-0"
    while True:
        try:
            found = await services.redis.xread(
                {services.keys.job_events(job_id): after}, block=1000
            )
        except RedisError:
            continue  # the client reconnects on the next call
        for _, entries in found:
            for entry_id, fields in entries:
                after = entry_id
                if fields.get("event") == "completed":
                    return


class HeldWorker(Worker):
    """A transcribe worker whose run stores a transcript, then holds until the test says go."""

    stage: ClassVar[Stage] = Stage.TRANSCRIBE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started, self.go = asyncio.Event(), asyncio.Event()
        self.runs = 0

    async def process(self, job: Job, workdir: Path, run: Run) -> None:
        self.runs += 1
        outputs = await store_transcript(run, workdir, b'{"segments": []}')
        self.started.set()
        await self.go.wait()
        await run.finish(outputs)


async def test_an_outcome_waits_out_a_long_redis_outage(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage finishes while Redis is down for longer than the worker ever gave up after
    before (30 s then; the test shrinks that to 0.5 s, which no longer applies): once Redis is
    back the outcome is recorded, the job completes, and the stage ran once."""
    monkeypatch.setattr(run_module, "WRITE_RETRY_S", 0.5, raising=False)
    server = OwnRedis(tmp_path / "redis")
    server.dir.mkdir()
    await server.start()
    settings = make_settings(redis_url=server.url, redis_timeout_s=0.5, visibility_timeout_s=120.0)
    try:
        async with Stack(settings, ("gateway",)) as stack:
            assert stack.services is not None
            services = stack.services
            async with HeldWorker(services) as worker:
                job = await transcribe_job(services)
                async with asyncio.timeout(10):
                    await worker.started.wait()
                await server.stop()
                worker.go.set()  # finished, with Redis gone
                await asyncio.sleep(2.0)  # the outage's length: four times the cap patched in
                await server.start()
                async with asyncio.timeout(20):
                    await completed(services, job.id)
                assert worker.runs == 1
    finally:
        await server.stop()
