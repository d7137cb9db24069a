"""Leases, attempts, retries and replays of the job protocol against the real Redis (the
rest of the protocol: `test_state.py`)."""

from __future__ import annotations

from redis.asyncio import Redis

from tests.test_state import OWNER, TRANSCRIPT, complete, finish, progress, retrying, start
from tests.test_state import job as job
from tests.test_state import names as names
from tests.test_state import store as store
from vidstream.job.model import ErrorInfo, Job, Stage, Status
from vidstream.job.protocol import (
    Cancel,
    EventName,
    Fail,
    HandBack,
    Replay,
)
from vidstream.state import bus
from vidstream.state.jobstore import JobStore, Lease
from vidstream.state.keys import Keys

# -- leases, attempts, retries and replays ------------------------------------------------------


async def test_a_live_run_holds_its_stage(store: JobStore, job: Job) -> None:
    """While one run holds the stage, another cannot claim it; once its lease runs out, it can."""
    assert (await store.apply(job.id, start(job, Stage.TRANSCRIBE, "a:1"))).ok
    busy = await store.apply(job.id, start(job, Stage.TRANSCRIBE, "b:1"))
    assert (busy.outcome, busy.status) == ("busy", Status.RUNNING)
    # The first run's worker died: nobody renews, the lease (here 0 ms) has run out.
    assert (await store.renew([(job.id, "a:1")], 0)) == [Lease.HELD]
    taken = await store.apply(job.id, start(job, Stage.TRANSCRIBE, "b:1"))
    assert taken.ok
    assert taken.attempts == 2
    assert await names(store, job.id) == ["queued", "started", "started"]


async def test_a_run_that_lost_its_stage_cannot_finish_it(store: JobStore, job: Job) -> None:
    """A zombie run (taken over after its lease ran out) can neither report nor complete."""
    await store.apply(job.id, start(job, Stage.RENDER, "a:1", lease_ms=0))
    assert (await store.apply(job.id, start(job, Stage.RENDER, "b:1"))).ok
    for late in (
        progress(job, Stage.RENDER, 0.9, owner="a:1"),
        complete(job, "a:1"),
        Fail(error=ErrorInfo("x", "y"), owner="a:1"),
    ):
        assert (await store.apply(job.id, late)).outcome == "lost"
    assert (await store.renew([(job.id, "a:1"), (job.id, "b:1")], 30_000)) == [
        Lease.TAKEN,
        Lease.HELD,
    ]
    assert (await store.apply(job.id, complete(job, "b:1"))).ok
    assert await names(store, job.id) == ["queued", "started", "started", "completed"]


async def test_attempts_count_tries_of_the_stage(store: JobStore, job: Job) -> None:
    """Each try of a stage counts; a new stage starts at 1; past the limit a try is refused."""
    tries = [await store.apply(job.id, start(job, Stage.TRANSCRIBE, f"r:{i}", lease_ms=0))
             for i in range(3)]  # fmt: skip
    assert [t.attempts for t in tries] == [1, 2, 3]
    exhausted = await store.apply(job.id, start(job, Stage.TRANSCRIBE, "r:4", lease_ms=0))
    assert (exhausted.outcome, exhausted.attempts) == ("exhausted", 3)
    # r:2 (still the owner) stops at a shutdown and hands the job back: not a new try.
    assert (await store.apply(job.id, HandBack(stage=Stage.TRANSCRIBE, owner="r:2"))).ok
    handed_back = await store.apply(job.id, start(job, Stage.TRANSCRIBE, "r:5", lease_ms=0))
    assert (handed_back.outcome, handed_back.attempts) == ("ok", 3)
    await store.apply(
        job.id,
        finish(job, Stage.TRANSCRIBE, {"transcript": TRANSCRIPT}, owner="r:5"),
    )
    assert (await store.apply(job.id, start(job, Stage.RENDER, "r:6"))).attempts == 1
    stored = await store.get(job.id)
    assert stored is not None and stored.attempts == 1


async def test_a_resent_transition_is_applied_once(store: JobStore, job: Job) -> None:
    """A transition resent after a lost reply changes nothing the second time."""
    claim = start(job, Stage.TRANSCRIBE)
    first, again = await store.apply(job.id, claim), await store.apply(job.id, claim)
    assert first.ok and again.ok
    assert first.event_id == again.event_id
    assert again.attempts == 1
    done = finish(job, Stage.TRANSCRIBE, {"transcript": TRANSCRIPT}, owner=OWNER)
    assert (await store.apply(job.id, done)).ok
    assert (await store.apply(job.id, done)).ok
    assert await names(store, job.id) == ["queued", "started", "stage_completed"]


async def test_a_stage_finishes_once(store: JobStore, job: Job) -> None:
    """A second run of a finished stage cannot finish it again (no second hand-off)."""
    await store.apply(job.id, start(job, Stage.TRANSCRIBE, "a:1"))
    outputs = {"transcript": TRANSCRIPT}
    assert (await store.apply(job.id, finish(job, Stage.TRANSCRIBE, outputs, owner="a:1"))).ok
    again = await store.apply(job.id, start(job, Stage.TRANSCRIBE, "b:1"))
    assert again.outcome == "done"  # a second run of a finished stage does not even start
    stored = await store.get(job.id)
    assert stored is not None and stored.done == {Stage.TRANSCRIBE}


async def test_retrying_then_replaying_a_failed_job(
    store: JobStore, job: Job, redis: Redis, prefix: str
) -> None:
    """A retry lets the stage go; a failed job replayed is queued again, keeping its outputs."""
    await store.apply(job.id, start(job, Stage.TRANSCRIBE))
    await store.apply(
        job.id,
        finish(job, Stage.TRANSCRIBE, {"transcript": TRANSCRIPT}, owner=OWNER),
    )
    await store.apply(job.id, start(job, Stage.RENDER))
    error = ErrorInfo("ffmpeg_failed", "boom")
    assert (await store.apply(job.id, retrying(error, Stage.RENDER, 12.5, OWNER))).ok
    assert (await store.apply(job.id, start(job, Stage.RENDER, "other:1"))).attempts == 2
    assert (
        await store.apply(job.id, Fail(error=error, owner="other:1", dead_letter=Stage.RENDER))
    ).ok
    assert await redis.ttl(Keys(prefix).job(job.id)) > 0

    assert not (await store.apply(job.id, Cancel())).ok
    replayed = await store.apply(job.id, Replay(first_stage=Stage.RENDER))
    assert replayed.ok and replayed.status is Status.QUEUED
    stored = await store.get(job.id)
    assert stored is not None
    assert (stored.status, stored.error, stored.attempts) == (Status.QUEUED, None, 0)
    assert stored.outputs == {"transcript": TRANSCRIPT} and stored.done == {Stage.TRANSCRIBE}
    assert await redis.ttl(Keys(prefix).job(job.id)) == -1  # running again: kept
    events = await store.events(job.id)
    assert [e.event.value for e in events][-3:] == ["started", "failed", "queued"]
    retry = next(e for e in events if e.event is EventName.RETRYING)
    assert retry.data == {"error": error.to_dict(), "attempt": 1, "retry_in_s": 12.5}
    assert events[-1].data == {"replay": True}
    assert (await store.apply(job.id, Replay(first_stage=Stage.RENDER))).outcome == "rejected"


async def test_due_retries_move_onto_their_stream(
    store: JobStore, job: Job, redis: Redis, prefix: str
) -> None:
    """A retry waits in Redis, timed by Redis, and reaches its stage's stream once due."""
    keys = Keys(prefix)
    await store.apply(job.id, start(job, Stage.TRANSCRIBE))
    error = ErrorInfo("storage_error", "blip")
    retry = await store.apply(job.id, retrying(error, Stage.TRANSCRIBE, 0.0, OWNER))
    assert retry.gen == 2  # a hand-off: the job's next generation
    assert await store.promote_due() == 1
    entries = await bus.history(redis, keys.stage_stream(Stage.TRANSCRIBE))
    assert [f for _, f in entries] == [
        {"job_id": job.id, "gen": "1"},
        {"job_id": job.id, "gen": "2"},
    ]
    assert await redis.zcard(keys.delayed) == 0
    assert await store.promote_due() == 0


async def test_a_later_retry_waits(store: JobStore, job: Job, redis: Redis, prefix: str) -> None:
    """A retry that is not due yet stays in the delayed set."""
    await store.apply(job.id, start(job, Stage.TRANSCRIBE))
    error = ErrorInfo("storage_error", "blip")
    await store.apply(job.id, retrying(error, Stage.TRANSCRIBE, 3600.0, OWNER))
    assert await store.promote_due() == 0
    assert await redis.zcard(Keys(prefix).delayed) == 1


async def test_an_entry_older_than_the_last_hand_off_is_stale(store: JobStore, job: Job) -> None:
    """Once a job was handed on again (a retry, a replay), an older entry for it starts
    nothing: duplicates are harmless."""
    assert (await store.apply(job.id, start(job, Stage.TRANSCRIBE, "a:1", gen=1))).ok
    error = ErrorInfo("storage_error", "blip")
    await store.apply(job.id, retrying(error, Stage.TRANSCRIBE, 60.0, "a:1"))
    stale = await store.apply(job.id, start(job, Stage.TRANSCRIBE, "b:1", gen=1))
    assert (stale.outcome, stale.gen) == ("stale", 2)
    assert (await store.apply(job.id, start(job, Stage.TRANSCRIBE, "c:1", gen=2))).ok


async def test_a_claim_respects_finished_stages_and_any_live_run(store: JobStore, job: Job) -> None:
    """A late claim of a finished stage is `done`; a claim of another stage while a live run
    holds the job is `busy`, so the job never moves back."""
    await store.apply(job.id, start(job, Stage.TRANSCRIBE, "t:1"))
    outputs = {"transcript": TRANSCRIPT}
    handed_on = finish(job, Stage.TRANSCRIBE, outputs, owner="t:1")
    assert (await store.apply(job.id, handed_on)).ok
    assert (await store.apply(job.id, start(job, Stage.RENDER, "r:1"))).ok
    late = await store.apply(job.id, start(job, Stage.TRANSCRIBE, "t:2"))
    assert late.outcome == "done"
    stored = await store.get(job.id)
    assert stored is not None and stored.stage is Stage.RENDER
    other = await store.apply(job.id, start(job, Stage.RENDER, "r:2"))
    assert other.outcome == "busy"


async def test_finishing_a_stage_hands_the_job_on_in_one_step(
    store: JobStore, job: Job, redis: Redis, prefix: str
) -> None:
    """stage_completed writes the next stage's entry itself; a resend writes it once."""
    await store.apply(job.id, start(job, Stage.TRANSCRIBE))
    handed_on = finish(job, Stage.TRANSCRIBE, {"transcript": TRANSCRIPT}, owner=OWNER)
    assert (await store.apply(job.id, handed_on)).ok
    assert (await store.apply(job.id, handed_on)).ok  # resent after a lost reply
    render = await bus.history(redis, Keys(prefix).stage_stream(Stage.RENDER))
    assert [f for _, f in render] == [{"job_id": job.id, "gen": "2"}]


async def test_a_dead_letter_is_written_with_the_failure(
    store: JobStore, job: Job, redis: Redis, prefix: str
) -> None:
    """Failing out of attempts records the dead letter in the same step, and only then."""
    await store.apply(job.id, start(job, Stage.RENDER, "a:1"))
    error = ErrorInfo("ffmpeg_failed", "boom")
    assert (
        await store.apply(job.id, Fail(error=error, owner="zombie:1", dead_letter=Stage.RENDER))
    ).outcome == "lost"
    assert await redis.xlen(Keys(prefix).dead_letters) == 0
    assert (await store.apply(job.id, Fail(error=error, owner="a:1", dead_letter=Stage.RENDER))).ok
    [(_, letter)] = await bus.history(redis, Keys(prefix).dead_letters)
    assert (letter["job_id"], letter["stage"], letter["code"], letter["attempts"]) == (
        job.id, "render", "ffmpeg_failed", "1",
    )  # fmt: skip
